"""The registry: the Python API that the CLI and the HTTP service are thin layers over."""

from __future__ import annotations

import copy
import getpass
import json
import math
import os
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from ratekeeper.artifacts import BlobStore, normalized_location, open_blob_store
from ratekeeper.batch.scoring import BatchSummary
from ratekeeper.engine.scorer import Scorer
from ratekeeper.errors import (
    ConflictError,
    IntegrityError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
)
from ratekeeper.governance import audit, replay, signing
from ratekeeper.governance import identity as identity_rules
from ratekeeper.governance import policy as policy_rules
from ratekeeper.governance.admin import IdentityAndAudit
from ratekeeper.governance.identity import User
from ratekeeper.governance.policy import Credential
from ratekeeper.governance.signing import SigningKey
from ratekeeper.governance.sso import SingleSignOn, looks_like_jwt
from ratekeeper.governance.workflow import PromotionWorkflow
from ratekeeper.packaging import lineage
from ratekeeper.packaging.package import (
    Package,
    as_pandas,
    build_package,
    load_package,
    validate_package,
)
from ratekeeper.packaging.signature import ValidationPolicy
from ratekeeper.registry import lifecycle, queries
from ratekeeper.registry.entities import ModelVersion, RegisteredModel, Stage, StageTransition
from ratekeeper.registry.uri import check_alias, check_name, parse_model_uri
from ratekeeper.rollouts.service import OutcomeActions, RolloutActions
from ratekeeper.settings import Settings
from ratekeeper.store import database
from ratekeeper.store.tables import (
    model_versions,
    models,
    registry_state,
    version_tags,
)
from ratekeeper.validation.policy import GatePolicy

DEFAULT_POLICY = "governed"


def _now() -> datetime:
    return datetime.now(UTC)


class Registry(PromotionWorkflow, IdentityAndAudit, RolloutActions, OutcomeActions):
    """A model registry: embedded (SQLite + local folder) by default, PostgreSQL by URL.

    ``Registry()`` opens the embedded registry under ``$RATEKEEPER_HOME`` (default
    ``./.ratekeeper``); ``Registry.create(...)`` makes a new one. ``uri`` may be a folder, a
    ``sqlite:///`` URL or a ``postgresql+psycopg://`` URL. ``artifacts`` overrides where artifact
    blobs are stored; by default a registry remembers the folder it was created with.

    ``token`` (or ``$RATEKEEPER_TOKEN``) is the credential behind writes: in a governed registry a
    write without one is refused. ``user`` names the actor for reads and in open registries.

    ``Registry("http://host:port", token=...)`` is a remote registry client (``RemoteRegistry``):
    the same API through a rating server, with no database credentials.
    """

    def __new__(cls, uri: str | Path | None = None, *args: Any, **kwargs: Any) -> Any:
        from ratekeeper.registry.remote import RemoteRegistry, is_remote

        if cls is Registry:
            # $RATEKEEPER_REGISTRY_URI may name a rating server as well as the argument.
            target = uri if uri is not None else (kwargs.get("settings") or Settings.from_env())
            where = target.registry_uri if isinstance(target, Settings) else target
            if is_remote(where):
                return RemoteRegistry(str(where), *args, **kwargs)  # not a Registry: no __init__
        return super().__new__(cls)

    def __copy__(self) -> Registry:
        # A twin (as_user, on_behalf_of) shares the engine and blobs; it must not go through
        # __new__, which may answer a RemoteRegistry when the settings name a rating server.
        twin = object.__new__(type(self))
        twin.__dict__.update(self.__dict__)
        return twin

    def __init__(
        self,
        uri: str | Path | None = None,
        *,
        token: str | None = None,
        artifacts: str | Path | None = None,
        user: str | None = None,
        settings: Settings | None = None,
        gate_policy: GatePolicy | None = None,
    ) -> None:
        self.settings = settings or Settings.from_env()
        self.gate_policy = gate_policy or GatePolicy()
        self.url, key_file = _locate(uri, self.settings)
        self.signing_key: SigningKey | None = signing.resolve_key(
            self.settings.audit_key, self.settings.audit_key_file, key_file, create=False
        )
        """The key that seals the audit head and the ledger (None: this process has none)."""
        self.engine = database.create_engine(self.url)
        recorded = _open_existing(self.engine, self.url)
        if artifacts is not None:
            self.settings = replace(self.settings, artifact_root=str(artifacts))
        try:
            self.blobs: BlobStore = _open_artifacts(
                self.engine, recorded.artifact_root, self.settings
            )
        except BaseException:
            self.engine.dispose()
            raise
        self._os_account = os_account()
        try:
            self._credential = self._credential_from(token or self.settings.token, user)
        except BaseException:
            self.engine.dispose()
            raise

    @classmethod
    def create(
        cls,
        uri: str | Path | None = None,
        *,
        admin: str,
        policy: str = DEFAULT_POLICY,
        identity: str = "token",
        artifacts: str | Path | None = None,
        settings: Settings | None = None,
        gate_policy: GatePolicy | None = None,
    ) -> tuple[Registry, str]:
        """Create a registry; ``admin`` is its first admin. Returns it, acting as that admin,
        and the admin's token (shown once).

        ``identity="os"`` lets a governed registry take the OS account as the actor instead of a
        token: honest-user governance for one person on a laptop (anyone who can run code as
        another OS user, or edit the files, can act as them). An embedded registry gets a new
        signing key in ``audit.key`` beside ``registry.db`` (0600); a registry on a database
        server needs one given (``RATEKEEPER_AUDIT_KEY_FILE``), kept outside the database.
        """
        from ratekeeper.registry.remote import is_remote

        if is_remote(uri):
            raise InvalidInputError(
                "a registry behind a rating server is created on the server (`ratekeeper init "
                "--admin NAME` there); connect to it with rk.Registry(url, token=...)"
            )
        settings = settings or Settings.from_env()
        chosen = policy_rules.check_policy(policy)
        if identity not in ("token", "os"):
            raise InvalidInputError(f"unknown identity {identity!r}: use token or os")
        if not isinstance(admin, str) or not admin.strip():
            raise InvalidInputError("name the registry's first admin: create(..., admin='name')")
        url, key_file = _locate(uri, settings)
        key = signing.resolve_key(
            settings.audit_key, settings.audit_key_file, key_file, create=key_file is not None
        )
        if key is None:
            raise InvalidInputError(
                "a registry on a database server needs a signing key kept outside the database: "
                "write one with `ratekeeper keygen FILE` and set RATEKEEPER_AUDIT_KEY_FILE"
            )
        # Checked before anything is created: a bad store URI leaves no half-made registry.
        root = str(artifacts) if artifacts is not None else settings.artifact_root
        root = normalized_location(root or _default_home(uri, settings) / "artifacts")
        engine = database.create_engine(url)
        try:
            _check_schema(engine, url)  # a registry of an older release: migrate, not create
            if _current_state(engine) is not None:
                raise ConflictError(f"a registry already exists at {_redact(url)}")
            _migrate(engine, url)
            with database.write_transaction(engine) as conn:
                created = database.insert_ignoring_conflict(
                    conn,
                    registry_state,
                    {
                        "id": 1,
                        "generation": 0,
                        "created_at": _now(),
                        "policy": chosen,
                        "identity": identity,
                        "artifact_root": root,
                    },
                )
                # Two processes creating one registry at once: exactly one finds it empty.
                if not created or identity_rules.list_users(conn):
                    raise ConflictError(f"a registry already exists at {_redact(url)}")
                identity_rules.add_user(conn, admin, ["admin"], admin)
                audit.append(
                    conn,
                    actor=admin,
                    action="registry.create",
                    after={"policy": chosen, "identity": identity, "admin": admin},
                )
                plain, info = identity_rules.create_token(conn, admin, admin, "first admin")
                audit.append(
                    conn,
                    actor=admin,
                    action="token.create",
                    target=admin,
                    after={"prefix": info.prefix, "description": "first admin"},
                )
                audit.seal_head(conn, key)
        finally:
            engine.dispose()
        _restrict(url)
        registry = cls(
            uri, token=plain, artifacts=artifacts, settings=settings, gate_policy=gate_policy
        )
        return registry, plain

    @staticmethod
    def migrate(
        uri: str | Path | None = None, *, settings: Settings | None = None
    ) -> tuple[str | None, str]:
        """Upgrade a registry's database schema to this release's; returns (revision before,
        revision after). The deployment's migration step (``ratekeeper migrate``, the
        Kubernetes Job): servers and clients refuse a registry at an older schema instead of
        upgrading it under load. On an empty database it creates the schema alone (``create``
        then adds the registry). Needs the database's own credentials, not a registry token.
        """
        from ratekeeper.registry.remote import is_remote

        settings = settings or Settings.from_env()
        where = uri if uri is not None else settings.registry_uri
        if is_remote(where):
            raise InvalidInputError(
                "a registry behind a rating server is migrated where its database is reachable "
                "(`ratekeeper --registry postgresql+psycopg://... migrate`), not through the server"
            )
        url, _key_file = _locate(uri, settings)
        database_file = url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else None
        if database_file is not None and not Path(database_file).exists():
            raise NotFoundError(
                f"no registry at {Path(database_file).parent}: create one with "
                "`ratekeeper init --admin NAME`"
            )
        engine = database.create_engine(url)
        try:
            return _migrate(engine, url)
        finally:
            engine.dispose()

    def _credential_from(self, token: str | None, user: str | None) -> Credential:
        if not token:
            return Credential("declared", user or self.settings.user)
        if not isinstance(token, str):
            raise InvalidInputError("token must be a string")
        sso = self._single_sign_on()
        if sso is not None and looks_like_jwt(token):
            person = sso.authenticate(token)
            return Credential("verified", person.name, roles=person.roles)
        with database.read_transaction(self.engine) as conn:
            access = policy_rules.access(conn, Credential("token", "", token), self._os_account)
        return Credential("token", access.actor, token)

    def _single_sign_on(self) -> SingleSignOn | None:
        """The company identity provider's verifier, when the settings configure one."""
        return SingleSignOn.from_settings(self.settings)

    def as_user(self, user: str) -> Registry:
        """The same registry acting as a *declared* name: reads, and writes in open registries.

        In a governed registry a declared name authorizes no write (use a token).
        """
        twin = copy.copy(self)
        twin._credential = Credential("declared", user)
        return twin

    def on_behalf_of(self, user: User) -> Registry:
        """The same registry acting as a user this process authenticated itself (the rating
        server, after checking a bearer token or an SSO token)."""
        twin = copy.copy(self)
        sso = user.created_by.startswith("sso:")
        twin._credential = Credential("verified", user.name, roles=user.roles if sso else None)
        return twin

    @property
    def policy(self) -> str:
        """``governed`` or ``open``, chosen when the registry was created."""
        with database.read_transaction(self.engine) as conn:
            return policy_rules.registry_policy(conn)

    def __repr__(self) -> str:
        return f"Registry({_redact(self.url)!r})"

    def close(self) -> None:
        self.engine.dispose()

    # -- registering ------------------------------------------------------------------------
    def register_model(
        self,
        model: Any,
        name: str,
        *,
        training_data: Any,
        target: str | None = None,
        exposure: str | None = None,
        metrics: Mapping[str, float] | None = None,
        description: str | None = None,
        tags: Mapping[str, str] | None = None,
        id_column: str | None = None,
        validation: ValidationPolicy | None = None,
    ) -> ModelVersion:
        """Package ``model`` (no pickle), store its files, and record version N+1 of ``name``."""
        package, facts, clean_metrics, clean_tags = package_model(
            model, name, training_data, target, exposure, metrics, tags, id_column, validation
        )
        return self.register_package(
            package,
            name,
            metrics=clean_metrics,
            lineage=facts,
            description=description,
            tags=clean_tags,
        )

    def register_package(
        self,
        package: Package,
        name: str,
        *,
        metrics: dict[str, float],
        lineage: dict[str, Any],
        description: str | None,
        tags: dict[str, str],
    ) -> ModelVersion:
        """Store an already built package and record it as the next version (one transaction)."""
        package = validate_package(package)  # a Package object is never trusted (docs/packages.md)
        for data in package.files.values():
            self.blobs.put(data)
        digest = self.blobs.put(package.manifest_bytes)
        now = _now()
        signature, profile = (
            json.dumps(package.signature.to_dict()),
            json.dumps(package.profile.to_dict()),
        )
        lineage_text = json.dumps(lineage)
        with self._write("register") as (conn, access):
            database.insert_ignoring_conflict(
                conn, models, {"name": name, "created_by": access.actor, "created_at": now}
            )
            model_id = queries.model_id(conn, name)
            database.lock_model(conn, model_id)
            number = 1 + (
                conn.execute(
                    sa.select(sa.func.coalesce(sa.func.max(model_versions.c.version), 0)).where(
                        model_versions.c.model_id == model_id
                    )
                ).scalar_one()
            )
            version_id = conn.execute(
                sa.insert(model_versions)
                .values(
                    model_id=model_id,
                    version=number,
                    flavor=package.flavor,
                    artifact_digest=digest,
                    artifact_size=package.size,
                    description=description,
                    created_by=access.actor,
                    created_at=now,
                    stage=Stage.NONE.value,
                    stage_changed_at=now,
                    signature=signature,
                    profile=profile,
                    metrics=json.dumps(metrics),
                    lineage=lineage_text,
                )
                .returning(model_versions.c.id)
            ).scalar_one()
            if tags:
                conn.execute(
                    sa.insert(version_tags),
                    [{"version_id": version_id, "key": k, "value": v} for k, v in tags.items()],
                )
            audit.append(
                conn,
                actor=access.actor,
                action="register",
                model=name,
                version=number,
                after={
                    "artifact": digest,
                    "flavor": package.flavor,
                    "metrics": metrics,
                    **replay.recorded_columns(package.size, signature, profile, lineage_text),
                },
                comment=description,
            )
            return queries.to_versions(conn, [queries.version_row(conn, name, number)])[0]

    # -- stages and aliases -----------------------------------------------------------------
    def transition_stage(
        self, name: str, version: int, stage: str | Stage, *, comment: str | None = None
    ) -> ModelVersion:
        """Move a version to a stage; promoting to Production archives the previous one.

        In a governed registry, Staging and Production are reached through
        ``request_promotion`` (and ``approve``); this moves versions to Archived or None.
        """
        target = Stage.parse(stage)
        with self._write(None) as (conn, access):
            if access.policy == policy_rules.GOVERNED and target in (
                Stage.STAGING,
                Stage.PRODUCTION,
            ):
                raise PermissionDeniedError(
                    f"this registry is governed: {target.value} needs an approved promotion "
                    "request (request_promotion, then approve by a second person)"
                )
            access.require("archive")
            return lifecycle.move_stage(conn, access.actor, name, version, target, comment)

    def rollback(self, name: str, *, comment: str | None = None) -> ModelVersion:
        """The kill switch: put the previous Production version back, in one transaction.

        The previous Production version is the last version other than the current one that
        was moved to Production; the current one is archived. Rolling back twice returns to
        where you started (like ``kubectl rollout undo``).
        """
        with self._write("rollback") as (conn, access):
            return lifecycle.rollback(conn, access.actor, name, comment)

    def set_alias(self, name: str, alias: str, version: int) -> ModelVersion:
        """Point ``alias`` (e.g. ``challenger``) at a version, moving it if it pointed elsewhere.

        In a governed registry a protected alias (``champion``) moves through an approved
        request (``request_promotion(name, N, "@champion", holdout=...)``); here it may only go
        back to a version an approved request pointed it at before (a rollback).
        """
        check_alias(alias)
        with self._write("alias") as (conn, access):
            if access.policy == policy_rules.GOVERNED:
                lifecycle.check_protected_alias(conn, name, alias, version)
            return lifecycle.set_alias(conn, access.actor, name, alias, version)

    def delete_alias(self, name: str, alias: str) -> None:
        with self._write("alias") as (conn, access):
            lifecycle.delete_alias(conn, access.actor, name, alias)

    # -- reading ----------------------------------------------------------------------------
    def list_models(self) -> list[RegisteredModel]:
        with database.read_transaction(self.engine) as conn:
            return queries.list_models(conn)

    def get_model(self, name: str) -> RegisteredModel:
        with database.read_transaction(self.engine) as conn:
            found = queries.list_models(conn, name)
        if not found:
            raise NotFoundError(f"model {name!r} does not exist")
        return found[0]

    def get_version(self, name: str, version: int) -> ModelVersion:
        with database.read_transaction(self.engine) as conn:
            return queries.to_versions(conn, [queries.version_row(conn, name, version)])[0]

    def list_versions(
        self,
        name: str | None = None,
        *,
        stage: str | Stage | None = None,
        alias: str | None = None,
        tag: str | tuple[str, str] | None = None,
    ) -> list[ModelVersion]:
        """Versions by name, stage, alias and tag (``"key"`` or ``"key=value"``)."""
        tag_filter: tuple[str, str | None] | None = None
        if isinstance(tag, str):
            key, _, value = tag.partition("=")
            tag_filter = (key, value if "=" in tag else None)
        elif tag is not None:
            tag_filter = (tag[0], tag[1])
        with database.read_transaction(self.engine) as conn:
            if name is not None:
                queries.model_id(conn, name)
            return queries.find_versions(
                conn,
                name=name,
                stage=Stage.parse(stage) if stage is not None else None,
                alias=alias,
                tag=tag_filter,
            )

    def get_transitions(self, name: str, version: int | None = None) -> list[StageTransition]:
        with database.read_transaction(self.engine) as conn:
            queries.model_id(conn, name)
            return queries.transitions(conn, name, version)

    def resolve(self, uri: str) -> ModelVersion:
        """The version a model URI points at right now."""
        ref = parse_model_uri(uri)
        with database.read_transaction(self.engine) as conn:
            if ref.version is not None:
                return queries.to_versions(
                    conn, [queries.version_row(conn, ref.name, ref.version)]
                )[0]
            queries.model_id(conn, ref.name)
            if ref.alias is not None:
                found = queries.find_versions(conn, name=ref.name, alias=ref.alias)
                what = f"alias {ref.alias!r}"
            elif ref.latest:
                found = queries.find_versions(conn, name=ref.name, newest_first=True, limit=1)
                what = "versions"
            else:
                found = queries.find_versions(
                    conn, name=ref.name, stage=ref.stage, newest_first=True, limit=1
                )
                what = f"version in {ref.stage.value if ref.stage else ''}"
        if not found:
            raise NotFoundError(f"model {ref.name!r} has no {what}")
        return found[0]

    def generation(self) -> int:
        """A counter bumped by every stage and alias move (what serving processes watch)."""
        with database.read_transaction(self.engine) as conn:
            return int(conn.execute(sa.select(registry_state.c.generation)).scalar_one())

    # -- loading ----------------------------------------------------------------------------
    def load_model(self, uri: str) -> Scorer:
        version = self.resolve(uri)
        return Scorer(version, self.load_package(version))

    def score_file(
        self,
        model_uri: str,
        input: str | Path,
        output: str | Path,
        *,
        rejects: str | Path | None = None,
        chunk_rows: int | None = None,
        progress: bool = False,
        **options: Any,
    ) -> BatchSummary:
        """Reprice a Parquet or CSV book with a model; see ``ratekeeper.batch.score_file``."""
        from ratekeeper.batch.scoring import CHUNK_ROWS, score_file

        return score_file(
            self.load_model(model_uri),
            input,
            output,
            rejects=rejects,
            chunk_rows=chunk_rows or CHUNK_ROWS,
            progress=progress,
            **options,
        )

    def load_package(self, version: ModelVersion) -> Package:
        """The verified package of a version; an integrity error names the model and version."""
        try:
            return load_package(self.blobs.get(version.artifact_digest), self.blobs.get)
        except IntegrityError as exc:
            raise IntegrityError(
                f"{version.name} version {version.version}: {exc.message}"
            ) from None


def package_model(
    model: Any,
    name: str,
    training_data: Any,
    target: Any,
    exposure: Any,
    metrics: Mapping[str, float] | None,
    tags: Mapping[str, str] | None,
    id_column: str | None,
    validation: ValidationPolicy | None,
) -> tuple[Package, dict[str, Any], dict[str, float], dict[str, str]]:
    """What registering a model records, built where the model is (embedded or remote client):
    the package, its lineage facts, and the checked metrics and tags."""
    check_name(name)
    clean_metrics = _check_metrics(metrics)
    clean_tags = _check_tags(tags)
    frame = as_pandas(training_data)  # once: packaging and the fingerprint share it
    package = build_package(
        model, frame, target=target, exposure=exposure, id_column=id_column, policy=validation
    )
    facts = {
        "training_data": lineage.data_fingerprint(frame),
        "libraries": lineage.library_versions(),
        "git": lineage.git_state(),
        "model_class": f"{type(model).__module__}.{type(model).__qualname__}",
    }
    return package, facts, clean_metrics, clean_tags


def _check_metrics(metrics: Mapping[str, float] | None) -> dict[str, float]:
    clean: dict[str, float] = {}
    for key, value in (metrics or {}).items():
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
        ):
            raise InvalidInputError(f"metric {key!r} must be a finite number, got {value!r}")
        clean[str(key)] = float(value)
    return clean


def _check_tags(tags: Mapping[str, str] | None) -> dict[str, str]:
    clean: dict[str, str] = {}
    for key, value in (tags or {}).items():
        if not isinstance(key, str) or not key or len(key) > 200:
            raise InvalidInputError(f"tag key {key!r} must be a non-empty string (at most 200)")
        clean[key] = str(value)
    return clean


def os_account() -> str:
    """The OS account running this process (never ``RATEKEEPER_USER``)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry, e.g. an arbitrary container uid
        return f"uid:{os.getuid()}"


def _default_home(uri: str | Path | None, settings: Settings) -> Path:
    if uri is not None and (isinstance(uri, Path) or "://" not in str(uri)):
        return Path(uri)
    return settings.home


def _locate(uri: str | Path | None, settings: Settings) -> tuple[str, Path | None]:
    """The database URL, and the default signing-key file (an embedded registry's only)."""
    uri = uri if uri is not None else settings.registry_uri
    if uri is None or isinstance(uri, Path) or "://" not in str(uri):
        home = Path(uri) if uri is not None else settings.home
        database_file = (home / "registry.db").resolve()
        return f"sqlite:///{database_file}", database_file.parent / "audit.key"
    url = str(uri)
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        return url, Path(url.removeprefix("sqlite:///")).resolve().parent / "audit.key"
    return url, None


def _current_state(engine: sa.Engine) -> Any:
    """The registry_state row, or None where no registry was created."""
    try:
        with database.read_transaction(engine) as conn:
            if not sa.inspect(conn).has_table("registry_state"):
                return None
            return conn.execute(sa.select(registry_state)).first()
    except sa.exc.OperationalError as exc:
        raise InvalidInputError(
            f"cannot open the registry at {_redact(str(engine.url))}: {exc.orig}"
        ) from None


def _migrate(engine: sa.Engine, url: str) -> tuple[str | None, str]:
    try:
        return database.migrate(engine)
    except sa.exc.OperationalError as exc:
        raise InvalidInputError(f"cannot open the registry at {_redact(url)}: {exc.orig}") from None


def _check_schema(engine: sa.Engine, url: str) -> None:
    try:
        database.check_schema(engine)
    except sa.exc.OperationalError as exc:
        raise InvalidInputError(f"cannot open the registry at {_redact(url)}: {exc.orig}") from None


def _open_existing(engine: sa.Engine, url: str) -> Any:
    """Open a registry that exists, at this release's schema: never create one on a read, and
    never upgrade one (``ratekeeper migrate`` does, as its own step)."""
    database_file = url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else None
    if database_file is not None and not Path(database_file).exists():
        engine.dispose()
        raise NotFoundError(
            f"no registry at {Path(database_file).parent}: create one with "
            "`ratekeeper init --admin NAME` (or rk.Registry.create(..., admin=NAME))"
        )
    try:
        _check_schema(engine, url)
        state = _current_state(engine)
    except BaseException:
        engine.dispose()
        raise
    if state is None:
        engine.dispose()
        raise NotFoundError(
            f"no registry in {_redact(url)}: create one with `ratekeeper init --admin NAME` "
            "(or rk.Registry.create(..., admin=NAME))"
        )
    return state


def _open_artifacts(engine: sa.Engine, recorded: str, settings: Settings) -> BlobStore:
    """The registry's artifact store: the one it recorded at creation, unless the settings name
    another (a folder moved, a bucket migrated). Another store must hold the newest version's
    package, or the registry refuses to open: a wrong ``RATEKEEPER_ARTIFACTS`` fails here, in one
    line, not at the first load of a model."""
    given = settings.artifact_root
    store = open_blob_store(given or recorded, settings)
    if not given or normalized_location(given) == recorded:
        return store
    with database.read_transaction(engine) as conn:
        newest = conn.execute(
            sa.select(models.c.name, model_versions.c.version, model_versions.c.artifact_digest)
            .join(models, models.c.id == model_versions.c.model_id)
            .order_by(model_versions.c.id.desc())
            .limit(1)
        ).first()
    if newest is not None and not store.exists(newest.artifact_digest):
        raise InvalidInputError(
            f"this registry keeps its artifacts in {recorded}, and {store.location} (given by "
            f"--artifacts or RATEKEEPER_ARTIFACTS) does not hold them (models:/{newest.name}/"
            f"{newest.version} is missing): drop that setting, or copy the artifacts there first"
        )
    return store


def _restrict(url: str) -> None:
    """An embedded registry's database is for its owner only (0600; its folder 0700)."""
    if not url.startswith("sqlite:///"):
        return
    database_file = Path(url.removeprefix("sqlite:///"))
    for path in (database_file, Path(f"{database_file}-wal"), Path(f"{database_file}-shm")):
        if path.exists():
            path.chmod(0o600)
    database_file.parent.chmod(0o700)


def _redact(url: str) -> str:
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return url


def load_model(uri: str, registry: Registry | None = None) -> Scorer:
    """Load ``models:/name/Production``, ``models:/name@alias`` or ``models:/name/N``."""
    return (registry or Registry()).load_model(uri)
