"""Who gets into the dashboard: the login cookie's limits, and an open page without a key."""

import time

from starlette.applications import Starlette
from starlette.routing import Route
from starlette.testclient import TestClient

from inferq.api.middleware.gate import Gate
from inferq.api.ops import session
from inferq.api.ops.ui import Dashboard
from inferq.api.state import CurrentConfig
from inferq.config import parse_config

KEY = "sk-dashboard-test"


def client(master_key: str | None) -> TestClient:
    text = "model_list:\n  - {model_name: m, litellm_params: {model: openai/m}}\n"
    if master_key:
        text += f"general_settings: {{master_key: {master_key}}}\n"
    current = CurrentConfig(parse_config(text))
    routes = [Route(p, e, methods=[m]) for p, e, m in Dashboard(current).routes()]
    return TestClient(Gate(Starlette(routes=routes), current), follow_redirects=False)


def page_with(cookie: str) -> int:
    header = f"{session.COOKIE}={cookie}".encode()  # raw bytes: a client may send anything
    return client(KEY).get("/ui", headers={"Cookie": header}).status_code


def test_a_login_cookie_works_until_it_expires_or_the_key_changes() -> None:
    assert page_with(session.issue(KEY)) == 200
    assert page_with(session.issue(KEY, now=time.time() - session.LIFETIME_S - 1)) == 401
    assert page_with(session.issue("sk-the-old-key")) == 401


def test_a_malformed_cookie_is_refused_not_an_error() -> None:
    for junk in ["", "x", "1.2", "9" * 5000 + ".ab", "\u00e9\u00e9.\u00e9", f"{10**11}.{'0' * 64}"]:
        assert page_with(junk) == 401, junk


def test_the_login_form_checks_the_key() -> None:
    c = client(KEY)
    assert c.post("/ui/login", data={}).status_code == 401
    assert "Enter the master key or an admin key." in c.post("/ui/login", data={}).text
    good = c.post("/ui/login", data={"master_key": KEY})
    assert good.status_code == 303 and session.valid(good.cookies[session.COOKIE], KEY)
    out = c.post("/ui/logout")
    assert out.status_code == 303 and 'inferq_ui=""' in out.headers["set-cookie"]


def test_a_key_login_names_its_key_and_cannot_be_moved_to_another() -> None:
    token, other = "a" * 64, "b" * 64
    cookie = session.issue(KEY, token=token)
    assert session.holder(cookie, KEY) == token and not session.valid(cookie, KEY)
    assert session.holder(cookie.replace(token, other), KEY) is None  # the signature covers it
    assert session.holder(session.issue(KEY), KEY) == ""  # the master key's
    assert page_with(cookie) == 401  # no key records here (no gateway): no such admin key


def test_without_a_master_key_the_dashboard_is_open() -> None:
    c = client(None)
    page = c.get("/ui")
    assert page.status_code == 200 and 'data-testid="total-requests"' in page.text
    assert c.post("/ui/login", data={"master_key": "anything"}).status_code == 303
