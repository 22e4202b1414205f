"""Django settings for Estuary, read from the environment with embedded defaults.

With no environment at all this is a development set-up: DEBUG on, SQLite under ``var/``,
Redis on localhost. Production sets ``DEBUG=0`` and a real ``SECRET_KEY``; HTTPS hardening then
turns on by itself (``ESTUARY_SECURE``) so ``manage.py check --deploy`` is clean. Every variable
is parsed by a helper of ``controlplane.env`` that raises ImproperlyConfigured on a bad value.
"""
from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from redis.asyncio.retry import Retry  # (the channel layer is asyncio)
from redis.backoff import ExponentialBackoff

from controlplane.env import envbool, envint, envlist, envstr, envurl
from ml import wire

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = envbool("DEBUG", True)

DATA_DIR = Path(envstr("ESTUARY_DATA_DIR") or BASE_DIR / "var").resolve()
DATA_DIR.mkdir(parents=True, exist_ok=True)

SECRET_KEY = envstr("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off")
    SECRET_KEY = "estuary-development-key-never-use-in-production-0123456789abcdef"

ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS", [])

# HTTPS hardening: on by default in production, off for local development.
SECURE = envbool("ESTUARY_SECURE", not DEBUG)
SECURE_SSL_REDIRECT = envbool("ESTUARY_SSL_REDIRECT", SECURE)
SESSION_COOKIE_SECURE = SECURE
CSRF_COOKIE_SECURE = SECURE
SECURE_HSTS_SECONDS = envint("ESTUARY_HSTS_SECONDS", 31_536_000 if SECURE else 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE
SECURE_HSTS_PRELOAD = SECURE
BEHIND_PROXY = envbool("ESTUARY_BEHIND_PROXY", False)
if BEHIND_PROXY:
    # Only behind a proxy that sets this header itself; otherwise clients could forge it.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
X_FRAME_OPTIONS = "DENY"
SECURE_REFERRER_POLICY = "same-origin"

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "axes",
    "drf_spectacular",
    "channels",
    "controlplane.apps.ControlPlaneConfig",
    "controlplane.devices",
    "controlplane.experiments",
    "controlplane.metrics",
    "frontend",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last: turns a login refused for too many failures into a 429 page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "controlplane.urls"
WSGI_APPLICATION = "controlplane.wsgi.application"
ASGI_APPLICATION = "controlplane.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database ------------------------------------------------------------------------------
_default_database_url = f"sqlite:///{DATA_DIR / 'estuary.sqlite3'}"
try:
    _database = dj_database_url.parse(envstr("DATABASE_URL") or _default_database_url,
                                      conn_max_age=0)
except ValueError as exc:
    raise ImproperlyConfigured(f"DATABASE_URL is not a database URL: {exc}") from None

if _database["ENGINE"] == "django.db.backends.sqlite3":
    _database["OPTIONS"] = {
        # Several processes (ASGI server, Celery, tests) share the file: wait for locks and
        # take the write lock up front so two writers never deadlock on an upgrade.
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # A file, not :memory:, so the ASGI server and agents started by the tests share it;
    # one per test process, so concurrent test runs in one checkout do not clobber each other.
    _database["TEST"] = {
        "NAME": envstr("ESTUARY_TEST_DB_NAME")
        or str(DATA_DIR / f"test-estuary-{os.getpid()}.sqlite3"),
    }
elif envstr("ESTUARY_TEST_DB_NAME"):
    _database["TEST"] = {"NAME": envstr("ESTUARY_TEST_DB_NAME")}

DATABASES = {"default": _database}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis, Channels, Celery ------------------------------------------------------------------
REDIS_URL = envurl("REDIS_URL", "redis://127.0.0.1:6379/0", schemes=("redis", "rediss", "unix"))

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [{
            "address": REDIS_URL,
            # redis-py 8 reads with a 5 s socket timeout by default, the same as channels_redis's
            # blocking BZPOPMIN: an idle WebSocket then died with "Timeout reading" (close 1011).
            "socket_timeout": 30,
            # A broker that does not answer must not hold a request (publishing) for long.
            "socket_connect_timeout": 2,
            # After Redis restarts, the pool's idle connections are dead; without a retry the
            # first command on each fails ("Connection closed by server"), so the first
            # WebSocket after a restart failed to join its group. One retry reconnects.
            "retry": Retry(ExponentialBackoff(cap=0.5, base=0.05), 1),
        }],
                   # Outside every device's key patterns (controlplane.devices.broker).
                   "prefix": "estuary.asgi",
                   # Live events go over Redis pub/sub on this host, in channels under this
                   # prefix (controlplane.metrics.fanout), not through the layer's groups.
                   },
    },
}


def _public_broker_url() -> str:
    """ESTUARY_PUBLIC_BROKER_URL, else REDIS_URL without its (admin) user and password."""
    public = envurl("ESTUARY_PUBLIC_BROKER_URL", REDIS_URL, schemes=("redis", "rediss", "unix"))
    parts = urlsplit(public)
    if "@" in parts.netloc and envstr("ESTUARY_PUBLIC_BROKER_URL") is not None:
        raise ImproperlyConfigured("ESTUARY_PUBLIC_BROKER_URL must not hold a user or password: "
                                   "each device logs in to the broker as its own user")
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def _broker_user_prefix() -> str:
    prefix = envstr("ESTUARY_BROKER_USER_PREFIX", "estuary.device.")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}", prefix):
        raise ImproperlyConfigured("ESTUARY_BROKER_USER_PREFIX must be 1-64 letters, digits, "
                                   "'.', '_', ':' or '-', starting with a letter or digit")
    return prefix


HEARTBEAT_INTERVAL_S = envint("ESTUARY_HEARTBEAT_INTERVAL_S", 10, minimum=1, maximum=3600)

#: The project's own knobs, in one namespace (read as ``settings.ESTUARY["..."]``).
ESTUARY = {
    "DATA_DIR": DATA_DIR,
    # Agents heartbeat this often; a device is offline after MISSED_HEARTBEATS of silence.
    "HEARTBEAT_INTERVAL_S": HEARTBEAT_INTERVAL_S,
    "MISSED_HEARTBEATS": 3,
    # The reaper runs once per heartbeat interval, so a dead agent's job fails within 4.
    "REAPER_INTERVAL_S": HEARTBEAT_INTERVAL_S,
    # Touched by the worker each time the reaper runs: a supervisor (./estuary up) restarts a
    # worker that stops touching it (alive but stuck, e.g. a consumer that lost its broker).
    "REAPER_MARK": DATA_DIR / "reaper.mark",
    # The broker address agents are told at enrolment (they may reach Redis by another name),
    # without userinfo: each device logs in as its own ACL user (controlplane.devices.broker).
    "PUBLIC_BROKER_URL": _public_broker_url(),
    # Names of the devices' Redis ACL users start with this; one prefix per deployment that
    # shares a Redis, since the reconciler deletes the users of this prefix it does not know.
    "BROKER_USER_PREFIX": _broker_user_prefix(),
    # How often the reconciler re-asserts every device's broker user (lost when Redis restarts).
    "BROKER_ACL_INTERVAL_S": envint("ESTUARY_BROKER_ACL_INTERVAL_S", 30, minimum=1,
                                    maximum=3600),
    "CONTROLPLANE_QUEUE": "controlplane",
    # Agents' reports run on this many threads of each server process, whose database
    # connections persist (controlplane.db_lane): at most this many connections per process,
    # each replaced after INGEST_CONN_MAX_AGE_S seconds. PostgreSQL: 4, so concurrent agents'
    # batches share its commits' flushes (issue #20: 4 agents ~+20% over 2 threads); SQLite
    # has one writer at a time: 2.
    "INGEST_THREADS": envint("ESTUARY_INGEST_THREADS",
                             4 if DATABASES["default"]["ENGINE"].endswith("postgresql") else 2,
                             minimum=1, maximum=32),
    "INGEST_CONN_MAX_AGE_S": envint("ESTUARY_INGEST_CONN_MAX_AGE_S", 600, minimum=1,
                                    maximum=86400),
    # Owners' reads of experiment and run lists and details (the dashboard polls them) run on
    # a lane of their own with this many threads per process, connections persisting likewise
    # (INGEST_CONN_MAX_AGE_S): no new connection per GET, and never queued behind reports.
    "READ_THREADS": envint("ESTUARY_READ_THREADS", 4, minimum=1, maximum=32),
    # Limits the agents share (ml.wire): one definition for both ends of the wire.
    "MAX_POINTS_PER_BATCH": wire.MAX_POINTS_PER_BATCH,
    "MAX_LOG_LINES_PER_BATCH": wire.MAX_LOG_LINES_PER_BATCH,
    "MAX_LOG_LINE_CHARS": wire.MAX_LOG_LINE_CHARS,
    "MAX_JSON_DEPTH": wire.MAX_JSON_DEPTH,
    "MAX_ENROLMENT_TTL_HOURS": 24 * 30,
    # Lines of each run's log sent with the WebSocket history.
    "HISTORY_LOG_LINES": 200,
    # Distributed runs: every placed agent must claim its job this long after the gang's
    # devices were allocated, or the run fails naming it.
    "GANG_CLAIM_DEADLINE_S": envint("ESTUARY_GANG_CLAIM_DEADLINE_S", 60, minimum=1,
                                    maximum=3600),
    # A distributed run that has waited this long for its devices reserves them: younger runs
    # that need any of them wait behind it instead of overtaking it forever.
    "GANG_RESERVE_AFTER_S": envint("ESTUARY_GANG_RESERVE_AFTER_S", 120, minimum=0,
                                   maximum=86400),
    # The rendezvous timeout handed to every rank (store, process group, every wait): a dead
    # peer surfaces as an error within it.
    "RENDEZVOUS_TIMEOUT_S": envint("ESTUARY_RENDEZVOUS_TIMEOUT_S", 30, minimum=1,
                                   maximum=3600),
}

CELERY_BROKER_URL = REDIS_URL
CELERY_RESULT_BACKEND = REDIS_URL
CELERY_RESULT_EXPIRES = 3600
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_DEFAULT_QUEUE = ESTUARY["CONTROLPLANE_QUEUE"]
CELERY_TASK_ROUTES = {"experiments.*": {"queue": ESTUARY["CONTROLPLANE_QUEUE"]},
                      "devices.*": {"queue": ESTUARY["CONTROLPLANE_QUEUE"]}}
CELERY_BEAT_SCHEDULE = {
    "reconcile-broker-users": {
        "task": "devices.reconcile_broker_users",
        "schedule": float(ESTUARY["BROKER_ACL_INTERVAL_S"]),
        "options": {"queue": ESTUARY["CONTROLPLANE_QUEUE"],
                    "expires": float(ESTUARY["BROKER_ACL_INTERVAL_S"])},
    },
    "reap-stale-jobs": {
        "task": "experiments.reap_stale_jobs",
        "schedule": float(ESTUARY["REAPER_INTERVAL_S"]),
        "options": {"queue": ESTUARY["CONTROLPLANE_QUEUE"],
                    "expires": float(ESTUARY["REAPER_INTERVAL_S"])},
    },
}
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celerybeat-schedule")

# --- Auth and API -------------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Password guessing (django-axes): after AXES_FAILURE_LIMIT failed logins for one username from
# one address, that pair is refused for AXES_COOLOFF_TIME, on the login page (429), the admin
# and the token endpoint (429, controlplane.login.TokenView). Failures are kept in the database,
# so every server process sees them; a success resets the count.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = envint("ESTUARY_LOGIN_FAILURE_LIMIT", 10, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=envint("ESTUARY_LOGIN_COOLOFF_MINUTES", 15, minimum=1))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_DISABLE_ACCESS_LOG = True  # record failures only, not every successful login
AXES_CLIENT_IP_CALLABLE = "controlplane.login.client_ip"

LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Token first: its WWW-Authenticate header makes anonymous API calls 401, not 403.
        "controlplane.auth.UserTokenAuthentication",
        "controlplane.auth.DeviceCredentialAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["controlplane.parsers.BoundedJSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # Every list is paginated (controlplane/pagination.py: page_size default 50, at most 500).
    "DEFAULT_PAGINATION_CLASS": "controlplane.pagination.Pagination",
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Estuary API",
    "DESCRIPTION": "Control plane of an edge-cloud ML testbed: devices, experiments, metrics.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "JobStateEnum": "controlplane.experiments.models.JobState",
        "JobOutcomeEnum": ["succeeded", "failed", "cancelled"],
        "ExperimentStatusEnum": "controlplane.experiments.models.Experiment.Status",
        "DeviceKindEnum": "controlplane.devices.models.Device.Kind",
        "EnrolmentTokenStatusEnum": "controlplane.devices.models.EnrolmentToken.Status",
    },
    # The schema is the truth: errors declared, unknown request fields refused (schema.py).
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "controlplane.schema.declare_error_responses",
        "controlplane.schema.forbid_unknown_fields",
    ],
    # Schema generation warnings become `check --deploy` warnings.
    "ENABLE_DJANGO_DEPLOY_CHECK": True,
}

# --- Internationalisation, static files, logging ------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = DATA_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)  # WhiteNoise warns when it is missing
STATICFILES_FINDERS = [
    "django.contrib.staticfiles.finders.AppDirectoriesFinder",
    "frontend.staticfinders.PlotlyFinder",
]
# With DEBUG off (production, `./estuary up`) WhiteNoise serves what `manage.py collectstatic`
# gathered into STATIC_ROOT: names with a content hash, cached for a year, and a gzip copy of
# each, sent when the browser accepts it. With DEBUG on it serves the apps' files as edited.
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage" if DEBUG
                    else "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = DEBUG

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {
        "controlplane": {"level": envstr("ESTUARY_LOG_LEVEL", "INFO")},
    },
}
