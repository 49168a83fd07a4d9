"""Explanation pages without a browser: content generated from the rules, the URL helper, the
source attributes, the text decision table, and what must never appear (patient data,
unescaped text, unknown rule ids)."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
import yaml

from cds_service.cli import main
from cds_service.config import Settings
from cds_service.engine import load_rules
from cds_service.engine.criteria.observation import ObservationCriterion
from cds_service.engine.model import Content, Link, Step
from cds_service.render import explain

ROOT = Path(__file__).resolve().parents[1]
CARDS = ROOT / "cards"


@pytest.fixture(scope="module")
def ruleset():
    return load_rules(CARDS)


@pytest.fixture(scope="module")
def explainer(ruleset):
    return explain.Explainer(ruleset, CARDS)


# --------------------------------------------------------------------------- URL helper


def test_explain_url_is_absolute_with_the_fired_rule_ids():
    assert explain.explain_url(
        "https://cds.example.org/", "nephrology", ["egfr-below-30-known-ckd", "ckd-stage-4-5"]
    ) == ("https://cds.example.org/explain/nephrology?rules=egfr-below-30-known-ckd,ckd-stage-4-5")
    assert explain.explain_url("https://cds.example.org/base", "urgent-care", []) == (
        "https://cds.example.org/base/explain/urgent-care"
    )
    assert (
        explain.explain_url("", "vascular", ["a"])
        == "http://127.0.0.1:8080/explain/vascular?rules=a"
    )


@pytest.mark.parametrize(
    "junk",
    [
        "Patient/123",
        "K 2.4 mmol/L",
        "<script>",
        "Jane Doe",
        "a,b",
        "1960-05-01",
        "12345",
        "",
        "UPPER",
        "x" * 101,
    ],
)
def test_explain_url_drops_anything_that_is_not_a_rule_id(junk):
    url = explain.explain_url(
        "https://x.example", "nephrology", [junk, "dialysis-recent", "dialysis-recent"]
    )
    assert url.endswith("?rules=dialysis-recent")
    assert "Patient" not in url and " " not in url and "<" not in url


def test_base_url_prefers_the_public_base_url(monkeypatch):
    settings = Settings.from_env({}, public_base_url="https://cds.example.org/")
    token = explain.REQUEST_BASE_URL.set("http://internal:8080/")
    try:
        assert explain.base_url(settings) == "https://cds.example.org"
    finally:
        explain.REQUEST_BASE_URL.reset(token)


def test_base_url_inside_a_request_is_the_request_host(client):
    seen = {}

    app = client.application

    @app.get("/_test_base_url")
    def _probe():
        seen["url"] = explain.base_url(app.extensions["cds"].settings)
        return "ok"

    client.get("/_test_base_url", base_url="http://ehr-facing.example:9000")
    assert seen["url"] == "http://ehr-facing.example:9000"
    assert explain.REQUEST_BASE_URL.get() is None  # reset after the request


@pytest.mark.parametrize(
    "host, expected",
    [
        ("127.0.0.1", "http://127.0.0.1:8080"),
        ("0.0.0.0", "http://127.0.0.1:9090"),
        ("cds.internal", "http://cds.internal:9090"),
        ("::1", "http://[::1]:9090"),
    ],
)
def test_base_url_outside_a_request_is_the_configured_address(host, expected):
    port = 8080 if host == "127.0.0.1" else 9090
    assert explain.base_url(Settings.from_env({}, host=host, port=port)) == expected


def test_base_url_without_settings_reads_the_environment(monkeypatch):
    monkeypatch.setenv("CDS_PUBLIC_BASE_URL", "https://from-env.example")
    assert explain.base_url() == "https://from-env.example"
    monkeypatch.setenv("CDS_PORT", "not a number")
    assert explain.base_url() == explain.DEFAULT_BASE_URL


def test_explain_link_is_a_cds_hooks_absolute_link():
    link = explain.explain_link(
        "nephrology",
        ["ckd-stage-4-5"],
        Settings.from_env({}, public_base_url="https://cds.example.org"),
    )
    assert link == {
        "label": "Why this card: the rules explained",
        "type": "absolute",
        "url": "https://cds.example.org/explain/nephrology?rules=ckd-stage-4-5",
    }


# --------------------------------------------------------------------------- pages over HTTP


def test_index_lists_every_route(client, ruleset):
    response = client.get("/explain")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    html = response.get_data(as_text=True)
    for route in ruleset.routes:
        assert f'href="/explain/{route.code}"' in html
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    assert "<script" not in html and "http://" not in html  # no scripts, no external resources


def test_every_route_page_shows_every_rule_and_what_it_reads(client, ruleset):
    for route in ruleset.routes:
        response = client.get(f"/explain/{route.code}")
        assert response.status_code == 200, route.code
        html = response.get_data(as_text=True)
        assert route.title in html
        for criterion in route.criteria.values():
            assert f'id="rule-{criterion.id}"' in html, (route.code, criterion.id)
            if isinstance(criterion, ObservationCriterion):
                assert criterion.concept.label in html
        for link in route.links:
            assert link.url in html
        for name, value_set in route.value_sets.items():
            for concept in list(value_set.exact.values())[:3]:
                assert f"<code>{concept.code}</code>" in html, (route.code, name, concept.code)


def test_thresholds_windows_and_codes_in_plain_words(client):
    html = client.get("/explain/nephrology").get_data(as_text=True)
    assert (
        "The newest eGFR result of the last 365 days (1 year) is below (&lt;) 30 mL/min/1.73m²"
        in html
    )
    assert "LOINC <code>98979-8</code>" in html
    assert "SNOMED CT <code>431857002</code> Chronic kidney disease stage 4" in html
    assert "estimated with CKD-EPI 2021" in html
    # The exception by its plain name (cards/nephrology.yaml title), never its id alone
    assert (
        "Unless any of these holds: chronic kidney disease known (coded, or eGFR below 30 for "
        "90 days)." in html
    )
    html = client.get("/explain/urgent-care").get_data(as_text=True)
    assert (
        "The highest body temperature result of the last 3 days is at or above (&gt;=) 38 °C"
        in html
    )
    assert "preliminary" in html and "LL (critically low)" in html
    assert "Only for patients under 18" in html
    html = client.get("/explain/medication-review").get_data(as_text=True)
    assert "RxNorm <code>83367</code> atorvastatin" in html
    assert "product codes" in html


def test_fired_rules_first_unknown_ids_ignored_and_never_echoed(client):
    html = client.get(
        "/explain/nephrology?rules=ckd-stage-4-5,<b>x</b>,no-such-rule,Patient-123"
    ).get_data(as_text=True)
    assert html.index('id="rule-ckd-stage-4-5"') < html.index('id="rule-kidney-transplant"')
    assert "<b>x</b>" not in html and "no-such-rule" not in html and "Patient-123" not in html
    plain = client.get("/explain/nephrology").get_data(as_text=True)
    assert plain.index('id="rule-kidney-transplant"') < plain.index('id="rule-ckd-stage-4-5"')


def test_unknown_route_is_a_404_operation_outcome(client):
    response = client.get("/explain/<script>alert(1)</script>")
    assert response.status_code == 404
    body = response.get_json()
    assert body["resourceType"] == "OperationOutcome"
    assert "script" not in response.get_data(as_text=True)


def test_pages_need_no_authentication(tmp_path):
    import json

    from jwt_helpers import Signer
    from jwt_helpers import jwks as jwk_set

    from cds_service.web.app import create_app

    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(jwk_set(Signer.es384())))
    app = create_app(
        Settings.from_env(
            {},
            data_dir=tmp_path,
            auth_mode="jwt",
            jwks_file=str(jwks),
            trusted_issuers=("https://ehr",),
            public_base_url="https://cds.example.org",
        )
    )
    client = app.test_client()
    assert client.get("/cds-services").status_code == 401
    assert client.get("/explain").status_code == 200
    assert client.get("/explain/vascular").status_code == 200


def test_text_is_escaped(ruleset, tmp_path):
    cards = tmp_path / "cards"
    shutil.copytree(CARDS, cards)
    path = cards / "nephrology.yaml"
    data = yaml.safe_load(path.read_text())
    data["why"] = "Kidneys <script>alert('x')</script> & more"
    # A rule's next step, caveats and links live in the content block it names.
    name = next(c["content"] for c in data["criteria"] if c.get("content"))
    data["content"][name].pop("steps", None)  # one written step instead of a list
    data["content"][name]["next_step"] = "Call <b>nephrology</b>"
    data["content"][name]["caveats"] = ["One <i>caveat</i>"]
    data["content"][name]["links"] = [{"label": "A <link>", "url": "https://example.org/a?b=1&c=2"}]
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    rules = load_rules(cards)
    html = explain.Explainer(rules, cards).route_html("nephrology")
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "Next step:</strong> Call &lt;b&gt;nephrology&lt;/b&gt;" in html
    assert "One &lt;i&gt;caveat&lt;/i&gt;" in html
    assert 'href="https://example.org/a?b=1&amp;c=2"' in html


def test_per_rule_content_from_a_named_content_block(ruleset):
    """The lead's rule model names a ``content`` block per criterion; its next step, caveats
    and links are shown under that rule."""
    route = next(r for r in ruleset.routes if r.code == "nephrology")
    criterion = route.criteria["ckd-stage-4-5"]
    fake = dataclasses.replace(
        route,
        content={
            "advanced-ckd": Content(
                (Step("Refer to nephrology."),),
                ("Check the stage.",),
                (Link("KDIGO", "https://kdigo.org/"),),
            )
        },
        content_of={**route.content_of, criterion.id: "advanced-ckd"},
    )
    assert explain.rule_content(fake, criterion, ruleset) == (
        "Refer to nephrology.",
        ["Check the stage."],
        [{"label": "KDIGO", "url": "https://kdigo.org/"}],
    )


# --------------------------------------------------------------------------- source attributes


def test_source_attributes_come_from_the_rule_files(explainer, ruleset):
    source = explain.source_attributes(ruleset, explainer.content_hash)
    block = ruleset.source_attributes
    assert source.developer == block["developer"]
    assert source.release_date == block["release_date"]
    assert source.citation_title == "What Type of Doctor Treats Leg Cramps?"
    urls = {link["url"] for link in source.links}
    assert all(link.url in urls for route in ruleset.routes for link in route.links)
    html = explainer.index_html()
    for text in (block["version"], explainer.content_hash, "Funding source", "Revision date"):
        assert text in html


def test_content_hash_changes_with_any_rule_file(tmp_path):
    cards = tmp_path / "cards"
    shutil.copytree(CARDS, cards)
    before = explain.rules_hash(cards)
    assert before == explain.rules_hash(CARDS)
    path = cards / "vascular.yaml"
    path.write_text(path.read_text() + "\n# reviewed\n")
    assert explain.rules_hash(cards) != before


@pytest.mark.parametrize(
    "edit, field",
    [
        (lambda s: s.pop("developer"), "source_attributes"),
        (lambda s: s.update(release_date="24 Nov 2026"), "source_attributes/release_date"),
        (lambda s: s.update(sponsor="x"), "source_attributes"),
    ],
)
def test_check_rules_validates_the_source_attributes(tmp_path, capsys, edit, field):
    cards = tmp_path / "cards"
    shutil.copytree(CARDS, cards)
    path = cards / "common.yaml"
    data = yaml.safe_load(path.read_text())
    edit(data["source_attributes"])
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    assert main(["check-rules", "--cards-dir", str(cards)]) == 1
    err = capsys.readouterr().err
    assert "common.yaml" in err and field in err


# --------------------------------------------------------------------------- text table


def test_check_rules_explain_prints_a_decision_table_per_route(capsys, ruleset):
    assert main(["check-rules", "--explain"]) == 0
    out = capsys.readouterr().out
    for route in ruleset.routes:
        assert f"{route.title} [{route.code}]" in out
        for criterion in route.criteria.values():
            assert f"[{criterion.id}]" in out, criterion.id
    assert "IF (rule makes a card) ... THEN" in out
    assert "UNLESS chronic kidney disease known (coded, or eGFR below 30 for 90 days)" in out
    assert "What Type of Doctor Treats Leg Cramps?" in out
    assert out.rstrip().endswith(")") and "OK:" in out


def test_html_and_text_share_the_rule_sentences(explainer, ruleset, capsys):
    route = next(r for r in ruleset.routes if r.code == "primary-care-workup")
    model = explain.explain_route(route, ruleset)
    html = explainer.route_html("primary-care-workup")
    text = explainer.text()
    for rule in model.rules:
        words = rule.when.split(" ")[:6]
        assert " ".join(words) in text.replace("\n      ", " ")
        assert rule.when.replace("<", "&lt;").replace(">", "&gt;").replace("'", "&#39;") in html


# --------------------------------------------------------------------------- evidence levels


def _escaped(text: str) -> str:
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("'", "&#39;")
    )


def test_every_rule_that_makes_a_card_shows_its_evidence_level_and_source(client, ruleset):
    """Generated from the rule files: each firing rule's level and source on its route page;
    building blocks and context have none. The references grade none of them, so every
    level is "not graded" with its source named (never an invented grade)."""
    for route in ruleset.routes:
        html = client.get(f"/explain/{route.code}").get_data(as_text=True)
        sections = html.split('<details id="rule-')[1:]
        for criterion in route.criteria.values():
            [section] = [s for s in sections if s.startswith(criterion.id + '"')]
            model = explain.explain_route(route, ruleset).by_id[criterion.id]
            if model.role != "fires":
                assert model.evidence_level is None and "Evidence level" not in section
                continue
            level = model.evidence_level
            assert level is not None, (route.code, criterion.id)
            assert level["level"] == "not graded"
            assert f"<strong>Evidence level:</strong> {level['level']}" in section
            assert _escaped(level["source"]) in section, (route.code, criterion.id)


def test_evidence_level_comes_from_the_named_content_block_or_the_rule(ruleset, tmp_path):
    cards = tmp_path / "cards"
    shutil.copytree(CARDS, cards)
    path = cards / "nephrology.yaml"
    data = yaml.safe_load(path.read_text())
    data["content"]["dialysis"]["evidence_level"] = {"level": "level X", "source": "Test 2026"}
    rule = next(c for c in data["criteria"] if c.get("use") == "dialysis-recent")
    rule["evidence_level"] = {"level": "level Y", "source": "Override 2026"}
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    loaded = load_rules(cards)
    route = next(r for r in loaded.routes if r.code == "nephrology")
    model = explain.explain_route(route, loaded, ["dialysis-recent"]).by_id
    assert model["dialysis-dependence"].evidence_level == {
        "level": "level X",
        "source": "Test 2026",
    }
    assert model["dialysis-recent"].evidence_level == {
        "level": "level Y",
        "source": "Override 2026",
    }
    html = explain.Explainer(loaded, cards).route_html("nephrology", "dialysis-recent")
    fired = html.split('id="fired"')[1].split("</section>")[0]
    assert "evidence level: level Y; Override 2026" in fired  # the fired list shows it too
    text = explain.Explainer(loaded, cards).text()
    assert "EVIDENCE level X (source: Test 2026)" in text


@pytest.mark.parametrize(
    "edit, field",
    [
        (lambda b: b.pop("evidence_level"), "evidence_level"),
        (lambda b: b["evidence_level"].pop("source"), "source"),
        (lambda b: b["evidence_level"].update(level=""), "level"),
    ],
)
def test_check_rules_requires_an_evidence_level_on_every_content_block(
    tmp_path, capsys, edit, field
):
    cards = tmp_path / "cards"
    shutil.copytree(CARDS, cards)
    path = cards / "vascular.yaml"
    data = yaml.safe_load(path.read_text())
    edit(data["content"]["pad"])
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    assert main(["check-rules", "--cards-dir", str(cards)]) == 1
    err = capsys.readouterr().err
    assert "vascular.yaml: field content/pad" in err and field in err


# --------------------------------------------------------------------------- the typed model


def test_a_named_status_set_is_listed_status_by_status(client):
    html = client.get("/explain/urgent-care").get_data(as_text=True)
    assert "Result statuses counted: final, amended, corrected or preliminary." in html
    assert "r, e, s, u, l, t" not in html


def _without_written_structure(route):
    """The route as the typed model has it, with the YAML keys whose form is about to change
    (the ``criteria`` list, ``type``, ``fires``, ``recent_days``/``lookback_days``) removed."""
    dropped = {"type", "fires", "recent_days", "lookback_days"}
    criteria = {
        cid: dataclasses.replace(c, spec={k: v for k, v in c.spec.items() if k not in dropped})
        for cid, c in route.criteria.items()
    }
    spec = {k: v for k, v in route.spec.items() if k != "criteria"}
    return dataclasses.replace(route, criteria=criteria, spec=spec)


def test_pages_come_from_the_typed_model_not_the_criteria_as_written(ruleset, explainer):
    """The rule file syntax changes (building_blocks:, lookback_days, when/unless): the pages
    read each criterion's class, fires, context and window, never those keys."""
    routes = [_without_written_structure(route) for route in ruleset.routes]
    typed = dataclasses.replace(ruleset, routes=routes)
    pages = explain.Explainer(typed, CARDS)
    for route in ruleset.routes:
        assert pages.route_html(route.code) == explainer.route_html(route.code), route.code
    assert pages.index_html() == explainer.index_html()
    assert pages.text() == explainer.text()


def test_pages_are_built_once_per_rule_set(ruleset, monkeypatch):
    """A request only marks the rules that fired on the model built at start-up."""
    from cds_service.render.explain import pages

    built = explain.Explainer(ruleset, CARDS)

    def fail(*_args, **_kwargs):
        raise AssertionError("a page model was rebuilt from the rules")

    monkeypatch.setattr(pages, "explain_route", fail)
    monkeypatch.setattr(pages, "source_attributes", fail)
    html = built.route_html("nephrology", "ckd-stage-4-5")
    assert 'class="rule fires fired"' in html
    assert built.route_html("nephrology") != html
    assert not any(r.fired for r in built.models["nephrology"].rules)  # the model is unchanged
    assert built.index_html() and built.text()


# --------------------------------------------------------------- shared definitions


def test_check_rules_explain_shows_each_shared_definition_once_with_its_users(capsys, ruleset):
    """Issue 21: a concept two routes read is worded once, with every rule that uses it."""
    assert main(["check-rules", "--explain"]) == 0
    out = capsys.readouterr().out
    routes, shared = out.split("Shared definitions (cards/shared/): each defined once")
    for shared_id in ruleset.shared_criteria:
        assert shared.count(f"[{shared_id}]\n") == 1, shared_id
    # The threshold is worded under Shared definitions only; each route points there.
    assert "below (<) 2.5 mmol/L" in " ".join(shared.split())
    assert "below (<) 2.5 mmol/L" not in " ".join(routes.split())
    pointer = "[potassium-critical-low] WHEN as defined once for every route (see Shared"
    assert " ".join(routes.split()).count(pointer) == 2
    entry = " ".join(shared.split()).split("[potassium-critical-low] ")[1]
    users = entry.split("used by ")[1].split(" [")[0]
    assert "Urgent care (same-day assessment) (makes the card)" in users
    assert "Primary care workup (building block)" in users
    # What a route adds stays in its own section, its exceptions by their plain names.
    workup = " ".join(routes.split("[primary-care-workup]")[1].split())
    assert "[potassium-low] WHEN as defined once for every route" in workup
    assert (
        "UNLESS potassium below 2.5 mmol/L in the last 7 days, chronic kidney disease stage 3 "
        "or worse, or dialysis on record, dependence on dialysis on record or dialysis "
        "procedure done in the last 14 days, unless acute kidney injury on record in the last "
        "90 days" in workup
    )


def test_explain_shared_names_every_route_that_uses_a_definition(ruleset):
    found = {item.id: item for item in explain.explain_shared(ruleset)}
    assert set(found) == set(ruleset.shared_criteria)
    for route in ruleset.routes:
        for criterion_id in route.shared:
            assert route.code in [u.route for u in found[criterion_id].users]
    diabetes = found["diabetes"]
    assert [u.route for u in diabetes.users] == ["endocrinology", "primary-care-workup"]
    assert diabetes.reads and diabetes.reads[0].name == "diabetes"


def test_pages_say_where_a_shared_definition_lives(client):
    index = client.get("/explain").get_data(as_text=True)
    assert 'id="shared-potassium-critical-low"' in index
    assert 'href="/explain/urgent-care#rule-potassium-critical-low"' in index
    assert 'href="/explain/primary-care-workup#rule-potassium-critical-low"' in index
    page = client.get("/explain/urgent-care").get_data(as_text=True)
    section = page.split('id="rule-potassium-critical-low"')[1].split("</section>")[0]
    assert "Defined once, in <code>cards/shared/criteria.yaml</code>" in section
    assert "also used by Primary care workup (building block)" in section
    assert "2.5" in section  # one route's page still reads whole: the definition is shown


def test_route_pages_say_how_an_open_referral_is_recognised(client):
    page = client.get("/explain/nephrology").get_data(as_text=True)
    assert "An open (active or on-hold) referral already on record replaces" in page
    assert "names nephrology, nephrologist, renal medicine, renal clinic" in page
    assert "kidney clinic or kidney specialist and says referral" in page
    assert "names no other specialty (another route&#39;s words, or urology, " in page
    assert "a duplicate is offered rather than a needed referral withheld" in page
    endocrinology = client.get("/explain/endocrinology").get_data(as_text=True)
    assert "183530004" in endocrinology  # referral to diabetologist counts too
