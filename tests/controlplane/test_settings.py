"""controlplane.settings: environment parsing, database defaults, production readiness."""
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connection

from controlplane.env import envbool, envint, envlist, envurl

REPO_ROOT = Path(__file__).resolve().parents[2]

#: Variables a developer's shell may set that would change what these tests observe.
PROJECT_VARIABLES = ("DEBUG", "SECRET_KEY", "DATABASE_URL", "REDIS_URL", "ALLOWED_HOSTS",
                     "ESTUARY_SECURE", "ESTUARY_DATA_DIR", "ESTUARY_HEARTBEAT_INTERVAL_S",
                     "ESTUARY_PUBLIC_BROKER_URL", "ESTUARY_SSL_REDIRECT", "ESTUARY_TEST_DB_NAME")


def run_python(code: str, tmp_path, **env: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter with only ``env`` as project configuration."""
    clean = {k: v for k, v in os.environ.items() if k not in PROJECT_VARIABLES}
    clean.update(ESTUARY_DATA_DIR=str(tmp_path), DJANGO_SETTINGS_MODULE="controlplane.settings",
                 **env)
    return subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=clean,
                          capture_output=True, text=True, timeout=120)


def production_env(**changes: str) -> dict[str, str]:
    return {"DEBUG": "0", "SECRET_KEY": secrets.token_urlsafe(50),
            "ALLOWED_HOSTS": "estuary.example.org", **changes}


class TestEnvHelpers:
    @pytest.mark.parametrize("raw, value", [("1", True), ("TRUE", True), ("on", True),
                                            ("0", False), ("no", False), ("", False)])
    def test_it_reads_booleans(self, monkeypatch, raw, value):
        monkeypatch.setenv("ESTUARY_FLAG", raw)
        assert envbool("ESTUARY_FLAG", not value) is value

    def test_it_rejects_a_bad_boolean(self, monkeypatch):
        monkeypatch.setenv("ESTUARY_FLAG", "maybe")
        with pytest.raises(ImproperlyConfigured, match="ESTUARY_FLAG"):
            envbool("ESTUARY_FLAG", True)

    @pytest.mark.parametrize("raw", ["ten", "0", "1e3", "99999"])
    def test_it_rejects_bad_integers(self, monkeypatch, raw):
        monkeypatch.setenv("ESTUARY_N", raw)
        with pytest.raises(ImproperlyConfigured, match="ESTUARY_N"):
            envint("ESTUARY_N", 10, minimum=1, maximum=3600)

    def test_it_reads_lists(self, monkeypatch):
        monkeypatch.setenv("ESTUARY_HOSTS", " a.org, b.org ,,")
        assert envlist("ESTUARY_HOSTS", []) == ["a.org", "b.org"]

    def test_it_rejects_a_url_of_the_wrong_scheme(self, monkeypatch):
        monkeypatch.setenv("ESTUARY_URL", "http://127.0.0.1:6379")
        with pytest.raises(ImproperlyConfigured, match="ESTUARY_URL"):
            envurl("ESTUARY_URL", "redis://x", schemes=("redis",))


class TestSettings:
    def test_it_defaults_to_sqlite_in_the_data_dir(self, tmp_path):
        result = run_python("from django.conf import settings as s; "
                            "print(s.DATABASES['default']['NAME'], s.DEBUG, s.REDIS_URL)",
                            tmp_path)
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == [str(tmp_path / "estuary.sqlite3"), "True",
                                         "redis://127.0.0.1:6379/0"]

    def test_it_reads_the_database_url(self, tmp_path):
        result = run_python("from django.conf import settings as s; d = s.DATABASES['default'];"
                            "print(d['ENGINE'], d['NAME'], d['HOST'])", tmp_path,
                            DATABASE_URL="postgres://postgres@db.internal:5432/estuary")
        assert result.stdout.split() == ["django.db.backends.postgresql", "estuary",
                                         "db.internal"]

    @pytest.mark.parametrize("env, message", [
        ({"ESTUARY_HEARTBEAT_INTERVAL_S": "often"}, "ESTUARY_HEARTBEAT_INTERVAL_S"),
        ({"DEBUG": "perhaps"}, "DEBUG"),
        ({"DATABASE_URL": "mongodb://x/y"}, "DATABASE_URL"),
        ({"REDIS_URL": "127.0.0.1:6379"}, "REDIS_URL"),
        ({"DEBUG": "0"}, "SECRET_KEY"),
        ({"ESTUARY_PUBLIC_BROKER_URL": "redis://admin:secret@broker.lab:6379/0"},
         "ESTUARY_PUBLIC_BROKER_URL must not hold a user or password"),
        ({"ESTUARY_BROKER_USER_PREFIX": "two words"}, "ESTUARY_BROKER_USER_PREFIX"),
        ({"ESTUARY_INGEST_THREADS": "0"}, "ESTUARY_INGEST_THREADS"),
        ({"ESTUARY_INGEST_CONN_MAX_AGE_S": "forever"}, "ESTUARY_INGEST_CONN_MAX_AGE_S"),
        ({"ESTUARY_READ_THREADS": "0"}, "ESTUARY_READ_THREADS"),
    ])
    def test_it_refuses_to_start_with_a_bad_value(self, tmp_path, env, message):
        result = run_python("import django; django.setup()", tmp_path, **env)
        assert result.returncode != 0
        assert "ImproperlyConfigured" in result.stderr and message in result.stderr

    def test_it_tells_agents_the_public_broker_url(self, tmp_path):
        result = run_python("from django.conf import settings as s; "
                            "print(s.ESTUARY['PUBLIC_BROKER_URL'])", tmp_path,
                            REDIS_URL="redis://10.0.0.5:6379/2")
        assert result.stdout.strip() == "redis://10.0.0.5:6379/2"
        result = run_python("from django.conf import settings as s; "
                            "print(s.ESTUARY['PUBLIC_BROKER_URL'])", tmp_path,
                            ESTUARY_PUBLIC_BROKER_URL="redis://broker.lab:6379/0")
        assert result.stdout.strip() == "redis://broker.lab:6379/0"

    def test_it_never_tells_agents_the_control_planes_redis_password(self, tmp_path):
        result = run_python("from django.conf import settings as s; "
                            "print(s.ESTUARY['PUBLIC_BROKER_URL'])", tmp_path,
                            REDIS_URL="redis://:admin-secret@10.0.0.5:6379/2")
        assert result.stdout.strip() == "redis://10.0.0.5:6379/2"

    @pytest.mark.django_db
    def test_it_tests_on_a_database_other_processes_can_open(self):
        name = connection.settings_dict["NAME"]
        if connection.vendor == "sqlite":
            assert Path(name).is_file()  # a file, not :memory:
            assert name == settings.DATABASES["default"]["TEST"]["NAME"]
        else:
            assert name.startswith("test_")


class TestCheckDeploy:
    def test_it_is_clean_with_production_settings(self, tmp_path):
        result = subprocess.run(
            [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
            env={**{k: v for k, v in os.environ.items() if k not in PROJECT_VARIABLES},
                 "ESTUARY_DATA_DIR": str(tmp_path), **production_env(),
                 # The broker check asks the session's Redis (which may not be on 6379).
                 "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")})
        assert result.returncode == 0, result.stdout + result.stderr
        assert "no issues" in result.stdout

    def test_it_turns_https_hardening_on_in_production(self, tmp_path):
        code = ("from django.conf import settings as s; print(s.SECURE_SSL_REDIRECT, "
                "s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SECURE_HSTS_SECONDS > 0)")
        assert run_python(code, tmp_path, **production_env()).stdout.split() == ["True"] * 4
        assert run_python(code, tmp_path, **production_env(ESTUARY_SECURE="0")
                          ).stdout.split() == ["False"] * 4
