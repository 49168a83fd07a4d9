"""``cds-service gallery``: one section per example, shared chart and bundle given, with the
chart's key data and its cards; self-contained and safe with untrusted chart text."""

from __future__ import annotations

import json
import re
from datetime import date
from html.parser import HTMLParser
from pathlib import Path

import pytest
from synthea import SYNTHEA_DIR, condition, synthea_files

from cds_service import examples
from cds_service.cli import main
from cds_service.config import Settings
from cds_service.gallery import build
from cds_service.gallery.charts import bundle_charts

TODAY = date(2026, 11, 24)
SHARED = SYNTHEA_DIR.parent
UUIDS = {"p1": "0c0a0b1e-0000-4000-8000-000000000001", "c1": "0c0a0b1e-0000-4000-8000-000000000002",
         "m1": "0c0a0b1e-0000-4000-8000-000000000003"}  # fmt: skip
PATIENT_URN = f"urn:uuid:{UUIDS['p1']}"
HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


class Page(HTMLParser):
    """Every element's tag and attributes, the sections' titles and the page's text."""

    def __init__(self, text: str):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.titles: list[str] = []
        self.text: list[str] = []
        self._in_h2 = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_h2 = tag == "h2"

    def handle_endtag(self, tag):
        self._in_h2 = self._in_h2 and tag != "h2"

    def handle_data(self, data):
        self.text.append(data)
        if self._in_h2:
            self.titles.append(data.strip())


def _bundle(*resources: dict) -> dict:
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"fullUrl": f"urn:uuid:{UUIDS[r['id']]}", "resource": r} for r in resources],
    }


@pytest.fixture(scope="module")
def hostile_dir(tmp_path_factory) -> Path:
    """A chart from 2019 whose problem and medicine names carry markup, with a new DVT (an
    urgent card quotes the problem's name) and no leg-cramp problem of its own."""
    directory = tmp_path_factory.mktemp("bundles")
    patient = {"resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "1950-03-01"}
    dvt = {
        "coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "I82.401"}],
        "text": f"DVT {HOSTILE}",
    }
    medicine = {
        "resourceType": "MedicationRequest",
        "id": "m1",
        "status": "active",
        "intent": "order",
        "subject": {"reference": PATIENT_URN},
        "authoredOn": "2019-05-01",
        "medicationCodeableConcept": {"text": f"Simvastatin 20 MG {HOSTILE}"},
    }
    bundle = _bundle(patient, condition("p1", "c1", dvt, "2019-05-02", PATIENT_URN), medicine)
    (directory / "Hostile_Chart.json").write_text(json.dumps(bundle))
    (directory / "notes.json").write_text('{"not": "a bundle"}')  # skipped
    return directory


@pytest.fixture(scope="module")
def gallery(hostile_dir) -> str:
    page, _count = build(
        Settings.from_env({}, today=TODAY.isoformat()), TODAY, SHARED, [hostile_dir]
    )
    return page


def test_every_example_and_bundle_has_a_section(gallery):
    titles = Page(gallery).titles
    assert set(examples.names()) <= set(titles)
    assert "Hostile Chart" in titles
    assert "notes" not in titles


@pytest.mark.skipif(not SYNTHEA_DIR.exists(), reason="shared/fhir-real not present")
def test_every_shared_chart_has_a_section(gallery):
    titles = Page(gallery).titles
    assert {path.stem.replace("_", " ") for path in synthea_files()} <= set(titles)
    assert len(titles) == len(examples.names()) + len(synthea_files()) + 1


def test_a_section_shows_key_data_beside_cards(gallery):
    section = _section(gallery, "urgent-care-critical-potassium")
    assert "Latest results the rules read" in section and "Potassium" in section
    assert 'class="card critical"' in section and "Override reasons:" in section
    assert "Leg-cramp problem" in section and "Medications on record" in section
    assert "year-old" in section


def test_an_old_chart_is_moved_to_be_recent_and_gets_a_cramp_problem(gallery):
    section = _section(gallery, "Hostile Chart")
    # Newest entry 2019-05-02, moved to a week before 2026-11-24; the age stays as recorded
    # (69 a week after that entry)
    assert "dates moved 2756 days forward" in section
    assert "(active, 2026-11-17)" in section
    assert "69-year-old female" in section
    assert "leg-cramp problem added today" in section
    assert 'class="card critical"' in section  # a DVT of a week ago is urgent


def test_untrusted_chart_text_is_escaped(gallery):
    page = Page(gallery)
    assert not [tag for tag, _ in page.tags if tag in ("script", "img", "iframe", "object")]
    assert not [a for _, attrs in page.tags for a in attrs if a.startswith("on")]
    text = "".join(page.text)
    assert 'alert("x")' in text  # shown as text, in the card and in the key data
    # in the key data (problem, medicine) and in the medication card's markdown detail
    assert gallery.count("&lt;script&gt;") >= 3


def test_the_page_is_self_contained(gallery):
    page = Page(gallery)
    assert not [t for t, attrs in page.tags if t == "link" or "src" in attrs]
    assert "@import" not in gallery and "url(" not in gallery
    csp = [
        a for t, a in page.tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy"
    ]
    assert csp and "default-src 'none'" in csp[0]["content"]
    links = [attrs["href"] for tag, attrs in page.tags if tag == "a"]
    assert all(h.startswith(("#", "https://", "http://")) for h in links), links


def test_bundle_charts_read_hook_requests_and_skip_other_json(tmp_path):
    request = json.loads(examples.render("nephrology-egfr-22", TODAY))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a-request.json").write_text(json.dumps(request))
    (tmp_path / "broken.json").write_text("{")
    settings = Settings.from_env({}, today=TODAY.isoformat())
    from cds_service.service import CdsService

    service = CdsService(settings, fetcher=lambda *a: {})
    charts = bundle_charts(tmp_path, "given", service.keys, service.ruleset, TODAY)
    assert [c.title for c in charts] == ["a-request"]
    assert bundle_charts(tmp_path / "absent", "given", service.keys, service.ruleset, TODAY) == []


def test_command_without_shared_charts_says_so_and_writes_the_examples(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("CDS_TODAY", TODAY.isoformat())
    out = tmp_path / "gallery.html"
    code = main(["gallery", str(out), "--shared-charts", str(tmp_path / "absent")])
    captured = capsys.readouterr()
    assert code == 0
    assert f"gallery of {len(examples.names())} charts written to {out}" in captured.out
    assert "no shared charts at" in captured.err
    assert set(examples.names()) <= set(Page(out.read_text()).titles)


def test_command_refuses_a_directory_that_is_not_there(tmp_path, capsys):
    code = main(["gallery", str(tmp_path / "g.html"), str(tmp_path / "nowhere")])
    assert code == 2 and "not a directory" in capsys.readouterr().err
    assert not (tmp_path / "g.html").exists()


def _section(page: str, title: str) -> str:
    """The HTML of the section headed ``title``."""
    sections = re.split(r'(?=<section class="chart")', page)
    found = [s for s in sections if f"<h2>{title}</h2>" in s]
    assert len(found) == 1, title
    return found[0]


def test_markdown_and_links_never_carry_script_or_fetch_anything():
    from cds_service.gallery.html import markdown, web_url

    html = str(
        markdown("**x** <b onclick=1>y</b> [a](javascript:alert(1)) ![i](https://e.org/i.png)")
    )
    assert "<strong>x</strong>" in html
    assert "<b" not in html and "<img" not in html  # an image is a link, never fetched
    assert 'href="javascript' not in html  # the unsafe link stays text
    assert web_url("javascript:alert(1)") == "" and web_url("https://e.org/g") == "https://e.org/g"


def test_key_data_writes_units_as_the_cards_do():
    """UCUM as words: a dimensionless ABI shows no "1", an annotation is spelled out."""
    from cds_service.gallery.keydata import _value

    abi = {"valueQuantity": {"value": 0.72, "unit": "1", "system": "http://unitsofmeasure.org"}}
    assert _value(abi) == "0.72"
    d_dimer = {"valueQuantity": {"value": 0.9, "code": "ug/mL{FEU}"}}
    assert "{" not in _value(d_dimer) and "FEU" in _value(d_dimer)
    assert _value({"valueQuantity": {"value": 3}}) == "3 (no unit)"
