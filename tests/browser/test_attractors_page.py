"""The served Attractors page in Debian's chromium (Playwright)."""

from urllib.parse import parse_qs, urlparse

import pytest

pytestmark = pytest.mark.slow


def test_page_loads_without_console_errors(open_page):
    p = open_page()
    status = p.wait_status("computed in")
    assert "Lorenz-63" in status
    p.page.wait_for_timeout(500)
    assert p.errors == []
    assert "Traceback" not in p.page.content()


def test_system_and_parameter_change_redraw(open_page):
    p = open_page()
    p.wait_status("computed in")
    p.page.wait_for_timeout(500)
    before = p.canvas_png()
    p.system_select().select_option(label="Hénon map")
    p.wait_status("Hénon map:")
    p.page.wait_for_timeout(800)
    henon = p.canvas_png()
    assert henon != before
    # type a new value of the parameter a into its slider's text box
    inputs = p.page.locator(".bk-input-group input")
    slider_input = next(inputs.nth(i) for i in range(inputs.count())
                        if inputs.nth(i).input_value() == "1.4")
    slider_input.fill("1.2")
    slider_input.press("Enter")
    p.page.wait_for_function("() => location.search.includes('p.a=1.2')", timeout=30_000)
    p.wait_status("computed in")
    p.page.wait_for_timeout(1200)
    assert p.canvas_png() != henon
    assert p.errors == []


def test_play_animates_and_pause_stops(open_page):
    p = open_page()
    p.wait_status("computed in")
    p.page.get_by_role("button", name="▶ Run").click()
    p.page.wait_for_timeout(1500)
    a = p.canvas_png()
    p.page.wait_for_timeout(700)
    b = p.canvas_png()
    assert a != b
    p.page.get_by_role("button", name="❚❚ Pause").click()
    still = False
    for _ in range(10):                 # frames already on the wire may still arrive
        c = p.canvas_png()
        p.page.wait_for_timeout(1000)
        if p.canvas_png() == c:
            still = True
            break
    assert still, "the animation kept running after pause"
    assert p.errors == []


def test_malformed_custom_equation_shows_error_and_page_keeps_working(open_page):
    p = open_page()
    p.wait_status("computed in")
    p.page.get_by_text("Custom system", exact=True).click()
    area = p.page.locator("textarea").first
    area.fill("dx/dt = sigma*(y - x) +* 2\ndy/dt = x*(rho - z) - y\ndz/dt = x*y - beta*z")
    p.page.get_by_text("⚠").first.wait_for(timeout=10_000)
    assert "'*'" in p.page.get_by_text("⚠").first.inner_text()
    assert p.page.get_by_role("button", name="Use these equations").is_disabled()
    # the rest of the page still works
    p.system_select().select_option(label="Rössler")
    p.wait_status("Rössler:")
    # a valid equation is accepted and simulated
    area.fill("dx/dt = -y - z\ndy/dt = x + a*y\ndz/dt = b + z*(x - c)")
    params = p.page.get_by_placeholder("name = value", exact=False).first
    params.fill("a = 0.2, b = 0.2, c = 5.7")
    params.press("Enter")
    button = p.wait_button("Use these equations", enabled=True)
    button.click()
    status = p.wait_status("Custom flow:")
    assert "computed in" in status and "all bounded" in status, status
    assert p.errors == []


def test_two_sessions_do_not_share_state(open_page):
    a = open_page()
    b = open_page()
    a.wait_status("computed in")
    b.wait_status("computed in")
    a.system_select().select_option(label="Hénon map")
    a.wait_status("Hénon map:")
    b.page.wait_for_timeout(1500)
    assert "Lorenz-63" in b.status()
    assert "sys=henon" not in b.page.url


def test_link_reproduces_state(open_page):
    p = open_page("?sys=rossler&p.c=9&n=3&T=200&view=3D&az=10&el=30&proj=x,y&z=z")
    status = p.wait_status("computed in")
    assert "Rössler" in status and "3 trajector" in status
    q = parse_qs(urlparse(p.page.url).query)
    assert q["p.c"] == ["9"] and q["view"] == ["3D"] and q["az"] == ["10"]


def test_classroom_mode_hides_controls(open_page):
    p = open_page("?preset=henon-fractal&classroom=1&hide=solver,dt,custom,export")
    p.wait_status("Lyapunov spectrum: done")              # the preset computes it too
    p.page.get_by_text("Hénon fractal.", exact=False).first.wait_for()
    assert p.errors == []
    assert p.page.get_by_text("Custom system", exact=True).count() == 0 or \
        not p.page.get_by_text("Custom system", exact=True).first.is_visible()
    assert not p.page.get_by_text("Trajectory CSV").first.is_visible()


def test_a_hostile_link_shows_a_notice_and_runs_no_markup(open_page):
    dialogs = []
    p = open_page("?n=1e12&p.rho=nan&dt=-1&sys=%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E")
    p.page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    p.wait_status("computed in")                       # the defaults run
    notice = p.page.get_by_text("Not used from the link")
    notice.wait_for(timeout=10_000)
    text = notice.inner_text()
    assert "<img src=x onerror=alert(1)>" in text and "n: must be at most 100000" in text
    assert "dt: must be greater than" in text and "rho" in text
    p.page.get_by_role("button", name="✕").click()
    notice.wait_for(state="hidden", timeout=10_000)
    assert dialogs == [] and p.errors == [], (dialogs, p.errors[:5])
