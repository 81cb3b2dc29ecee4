"""Batch scoring of whole books: files in chunks (``score_file``); Spark is ``ratekeeper.spark``."""

from ratekeeper.batch.scoring import BatchSummary, PricedChunk, price_chunk, score_file

__all__ = ["BatchSummary", "PricedChunk", "price_chunk", "score_file"]
