"""The wrk Lua script of the serving benchmark: post one policy, cap the requests, print JSON."""

from __future__ import annotations

WRK_SCRIPT = """\
wrk.method = "POST"
wrk.body = {body}
wrk.headers["Content-Type"] = "application/json"
local cap = {cap}
local sent = 0
local req = nil
request = function()
  if req == nil then req = wrk.format() end
  sent = sent + 1
  if sent > cap then wrk.thread:stop() end
  return req
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{{"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"max_us":%d,'
    .. '"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
"""


def lua_string(text: str) -> str:
    return "[==[" + text + "]==]"
