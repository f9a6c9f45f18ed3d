"""Benchmark: how well the DataVerification agent finds transcription errors on degraded lab
report pages, and what it costs next to tesseract alone.

A seeded generator draws lab report pages (sdv.verification.samples): 10-16 tests each, named
the way labs print them (synonyms: Hb, Haemoglobin, SGPT, Leucocytes, Na+...), in SI or
conventional units (g/dL against the EDC's g/L, mg/dL against mmol/L, 10^3/uL against 10^9/L),
in four fonts and varied layouts, then degraded (rotated a few degrees or sideways, blurred,
grainy, JPEG-compressed, faxed) and saved as PNG, JPEG or an image-only PDF. Each page is one
subject's visit; the EDC holds every value converted to the EDC's unit and rounded to its
precision, except about 10% planted transcription errors (two digits swapped, the decimal point
shifted, a wrong digit; each checked to differ under the matching rule), and two tests the page
does not print (which must come out "not found").

The documents are uploaded through the product's upload service, the agent reads them (its
`run`, as a worker runs it, using every core), and its verdicts are scored: a discrepancy verdict
on a planted error is a true positive, on a clean value a false positive; a planted error with
any other verdict is a false negative. `verified_share` is the share of clean values verified.
Then tesseract alone reads the same rasterised pages (the image files as stored; PDF pages as the
agent rasterises them, saved as PNG) with the agent's own tesseract configuration, on as many processes at
once as the agent: `time_ratio` is the agent's time over tesseract's. `--ablation` also runs the
agent without each clean-up step in turn.

Everything is written in one transaction that is rolled back, and files go to a temporary
MEDIA_ROOT that is removed: the database and the store are left as they were. The last line is
the figures as JSON."""

import json
import os
import random
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

import pytesseract
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from sdv.documents import document_path, document_upload
from sdv.models import SourceDocument, SourceVerification
from sdv.verification import analytes, files, ocr, samples
from sdv.verification.agent import DataVerificationAgent
from sdv.verification.services import ocr_workers
from sdv.verification.units import conversion_factor, number_parse, rounded, values_compare
from studies.audit import set_audit
from studies.models import (
    DataPoint,
    FormDefinition,
    ItemDefinition,
    Site,
    Study,
    Subject,
    SubjectVisit,
    VisitDefinition,
)

REASON = "bench_sdv (rolled back)"
# code, EDC label, EDC unit, EDC decimals, page options: (printed units, decimals, low, high, reference range)
PANEL = [
    ("HGB", "Hemoglobin", "g/L", 0, [(("g/dL",), 1, 10.5, 17.5, "12.0 - 16.0"), (("g/L",), 0, 105, 175, "120 - 160")]),
    ("WBC", "White blood cells", "10^9/L", 1, [(("10^9/L", "x10^9/L", "G/L"), 1, 2.8, 13.5, "4.0 - 10.0"),
                                              (("10^3/uL", "K/uL"), 1, 2.8, 13.5, "4.0 - 10.0")]),
    ("PLAT", "Platelets", "10^9/L", 0, [(("10^9/L", "G/L"), 0, 110, 460, "150 - 400"),
                                       (("10^3/uL",), 0, 110, 460, "150 - 400")]),
    ("RBC", "Red blood cells", "10^12/L", 2, [(("10^12/L", "T/L"), 2, 3.6, 6.1, "4.20 - 5.80"),
                                             (("10^6/uL",), 2, 3.6, 6.1, "4.20 - 5.80")]),
    ("NEUT", "Neutrophils", "10^9/L", 1, [(("10^9/L",), 1, 1.2, 8.5, "2.0 - 7.5"), (("10^3/uL",), 1, 1.2, 8.5,
                                                                                   "2.0 - 7.5")]),
    ("SODIUM", "Sodium", "mmol/L", 0, [(("mmol/L",), 0, 128, 150, "135 - 145"), (("mEq/L",), 0, 128, 150,
                                                                                 "135 - 145")]),
    ("K", "Potassium", "mmol/L", 1, [(("mmol/L",), 1, 3.1, 6.0, "3.5 - 5.1"), (("mEq/L",), 1, 3.1, 6.0, "3.5 - 5.1")]),
    ("CL", "Chloride", "mmol/L", 0, [(("mmol/L",), 0, 94, 112, "98 - 107")]),
    ("CREAT", "Creatinine", "umol/L", 0, [(("umol/L",), 0, 45, 140, "62 - 106"), (("mg/dL",), 2, 0.55, 1.6,
                                                                                  "0.70 - 1.20")]),
    ("GLUC", "Glucose", "mmol/L", 1, [(("mmol/L",), 1, 3.6, 9.8, "3.9 - 5.6"), (("mg/dL",), 0, 65, 175, "70 - 99")]),
    ("UREA", "Urea", "mmol/L", 1, [(("mmol/L",), 1, 2.2, 9.5, "2.5 - 7.8"), (("mg/dL",), 0, 13, 57, "15 - 45")]),
    ("BILI", "Total bilirubin", "umol/L", 1, [(("umol/L",), 1, 2.5, 28.0, "3.4 - 20.5"),
                                             (("mg/dL",), 1, 0.2, 1.6, "0.2 - 1.2")]),
    ("ALT", "Alanine aminotransferase", "U/L", 0, [(("U/L", "IU/L"), 0, 6, 95, "0 - 41")]),
    ("AST", "Aspartate aminotransferase", "U/L", 0, [(("U/L", "IU/L"), 0, 8, 90, "0 - 40")]),
    ("ALP", "Alkaline phosphatase", "U/L", 0, [(("U/L",), 0, 35, 160, "40 - 129")]),
    ("GGT", "Gamma-glutamyl transferase", "U/L", 0, [(("U/L",), 0, 6, 120, "8 - 61")]),
    ("ALB", "Albumin", "g/L", 0, [(("g/L",), 0, 28, 54, "35 - 50"), (("g/dL",), 1, 2.8, 5.4, "3.5 - 5.0")]),
    ("PROT", "Total protein", "g/L", 0, [(("g/L",), 0, 58, 88, "64 - 83"), (("g/dL",), 1, 5.8, 8.8, "6.4 - 8.3")]),
    ("CA", "Calcium", "mmol/L", 2, [(("mmol/L",), 2, 2.02, 2.74, "2.15 - 2.55"), (("mg/dL",), 1, 8.1, 11.0,
                                                                                  "8.6 - 10.2")]),
    ("CHOL", "Cholesterol", "mmol/L", 1, [(("mmol/L",), 1, 3.1, 7.6, "< 5.2"), (("mg/dL",), 0, 120, 290, "< 200")]),
    ("TRIG", "Triglycerides", "mmol/L", 2, [(("mmol/L",), 2, 0.45, 3.2, "< 1.70"), (("mg/dL",), 0, 40, 280,
                                                                                    "< 150")]),
    ("URATE", "Uric acid", "umol/L", 0, [(("umol/L",), 0, 180, 500, "202 - 416"), (("mg/dL",), 1, 3.0, 8.4,
                                                                                   "3.4 - 7.0")]),
]
PANEL_BY_CODE = {row[0]: row for row in PANEL}
KINDS = ("png", "jpeg", "pdf")


@dataclass
class Expected:
    page: int
    code: str
    printed: bool  # on the page (else the verdict must be not_found)
    error: str = ""  # the planted transcription error, if any
    edc: str = ""
    source: str = ""


@dataclass
class PageSpec:
    number: int
    kind: str
    lines: list
    layout: samples.Layout
    degradation: samples.Degradation
    dpi: int
    expected: list = field(default_factory=list)


def _format(value: Decimal, places: int) -> str:
    return f"{rounded(value, places):.{places}f}"


def _synonym(rng: random.Random, code: str) -> str:
    names = [name for name, c in _printed_names().items() if c == code]
    return rng.choice(names)


_NAMES: dict[str, str] = {}


def _printed_names() -> dict[str, str]:
    if not _NAMES:
        import csv  # noqa: PLC0415

        with open(analytes.SYNONYMS_CSV, newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                _NAMES[row["name"]] = row["lbtestcd"]
    return _NAMES


def _plant(rng: random.Random, edc: str, places: int) -> tuple[str, str]:
    """A transcription error of `edc`: two adjacent digits swapped, the decimal point shifted, or a
    wrong digit; ("", "") when none differs (e.g. "11")."""
    kinds = ["swap", "decimal", "digit"]
    rng.shuffle(kinds)
    for kind in kinds:
        digits = [i for i, ch in enumerate(edc) if ch.isdigit()]
        if kind == "swap":
            pairs = [(a, b) for a, b in zip(digits, digits[1:], strict=False) if b == a + 1 and edc[a] != edc[b]]
            if pairs:
                a, b = rng.choice(pairs)
                return kind, edc[:a] + edc[b] + edc[a] + edc[b + 1:]
        elif kind == "decimal":
            value = Decimal(edc)
            shifted = value * 10 if rng.random() < 0.5 else value / 10
            return kind, _format(shifted, places + (1 if shifted < value else 0))
        else:
            position = rng.choice(digits)
            new = rng.choice([d for d in "0123456789" if d != edc[position]])
            if position == 0 and new == "0" and len(digits) > 1:
                new = "1" if edc[0] != "1" else "2"
            return kind, edc[:position] + new + edc[position + 1:]
    return "", ""


def page_specs(seed: int, pages: int, error_rate: float) -> list[PageSpec]:
    rng = random.Random(seed)
    specs = []
    for number in range(1, pages + 1):
        kind = KINDS[(number - 1) % len(KINDS)]
        us = rng.random() < 0.45  # a lab reporting conventional units
        chosen = rng.sample(PANEL, rng.randint(12, 18))
        printed, absent = chosen[:-2], chosen[-2:]
        spec = PageSpec(number=number, kind=kind, lines=[], layout=samples.layout_random(rng),
                        degradation=samples.degradation_random(rng, jpeg=kind == "jpeg"),
                        dpi=rng.choice((300, 300, 200)))
        for code, _, edc_unit, edc_places, options in printed:
            units, places, low, high, reference = options[1] if us and len(options) > 1 else options[0]
            unit = rng.choice(units)
            true_value = Decimal(str(rng.uniform(low, high)))
            page_text = _format(true_value, places)
            factor = conversion_factor(unit, edc_unit, code)
            edc_text = _format(Decimal(page_text) * factor, edc_places)
            flag = ""
            parsed_range = [number_parse(p) for p in reference.replace("<", "").split("-")]
            if len(parsed_range) == 2 and all(parsed_range):
                if Decimal(page_text) > parsed_range[1].value:
                    flag = "H"
                elif Decimal(page_text) < parsed_range[0].value:
                    flag = "L"
            elif reference.startswith("<") and parsed_range[0] and Decimal(page_text) >= parsed_range[0].value:
                flag = "H"
            expected = Expected(page=number, code=code, printed=True, edc=edc_text, source=page_text)
            if rng.random() < error_rate:
                kind_of_error, wrong = _plant(rng, edc_text, edc_places)
                if wrong and values_compare(source=page_text, source_unit=unit, edc=wrong, edc_unit=edc_unit,
                                            analyte=code).matches is False:
                    expected.error, expected.edc = kind_of_error, wrong
            spec.lines.append(samples.LabLine(_synonym(rng, code), page_text, unit, reference, flag))
            spec.expected.append(expected)
        for code, _, _, edc_places, options in absent:
            units, places, low, high, _ = options[0]
            value = _format(Decimal(str(rng.uniform(low, high))), edc_places)
            spec.expected.append(Expected(page=number, code=code, printed=False, edc=value))
        specs.append(spec)
    return specs


def page_file(spec: PageSpec) -> tuple[bytes, str]:
    image = samples.lab_report_image(spec.lines, subject_id=f"B-{spec.number:04d}", visit="Week 4",
                                     collected="2025-03-04 08:15", dpi=spec.dpi, layout=spec.layout)
    image = samples.degrade(image, spec.degradation, seed=spec.number)
    if spec.kind == "pdf":
        return samples.images_pdf([image], dpi=spec.dpi), f"page-{spec.number}.pdf"
    if spec.kind == "jpeg":
        quality = spec.degradation.jpeg_quality or 70
        return samples.image_bytes(image, "jpeg", quality=quality, dpi=spec.dpi), f"page-{spec.number}.jpg"
    return samples.image_bytes(image, "png", dpi=spec.dpi), f"page-{spec.number}.png"


class Command(BaseCommand):
    help = "Precision, recall and F1 of source discrepancy detection on degraded lab pages; time against tesseract."

    def add_arguments(self, parser):
        parser.add_argument("--pages", type=int, default=60, help="lab report pages (default 60)")
        parser.add_argument("--seed", type=int, default=17)
        parser.add_argument("--error-rate", type=float, default=0.10, help="share of EDC values transcribed wrongly")
        parser.add_argument("--workers", type=int, default=0, help="pages read at once (default: one per core)")
        parser.add_argument("--ablation", action="store_true", help="also run without each clean-up step")
        parser.add_argument("--show", type=int, default=10, help="misses and false alarms to print")
        parser.add_argument("--keep", default="", help="a folder to copy the generated page files to")

    def handle(self, *args, pages, seed, error_rate, workers, ablation, show, keep, **options):
        if pages < 1:
            raise CommandError("--pages must be at least 1")
        try:
            ocr.tesseract_version()
        except ocr.OcrUnavailable as error:
            raise CommandError(str(error))
        workers = workers or ocr_workers()
        media, previous_media = tempfile.mkdtemp(prefix="bench-sdv-"), settings.MEDIA_ROOT
        settings.MEDIA_ROOT = Path(media)
        on_upload, settings.SDV_VERIFY_ON_UPLOAD = settings.SDV_VERIFY_ON_UPLOAD, False  # the bench runs the agent
        try:
            with transaction.atomic():  # everything written is rolled back at the end
                result, lines = self._measure(seed, pages, error_rate, workers, ablation, show, keep)
                transaction.set_rollback(True)
        finally:
            settings.MEDIA_ROOT, settings.SDV_VERIFY_ON_UPLOAD = previous_media, on_upload
            shutil.rmtree(media, ignore_errors=True)
        for line in lines:
            self.stdout.write(line)
        self.stdout.write(json.dumps({"bench": "sdv", "seed": seed, **result}))

    # --- set-up -----------------------------------------------------------------------------------
    def _study(self, specs: list[PageSpec], actor):
        study = Study(protocol_id=f"BENCH-SDV-{os.getpid()}-{time.time_ns()}", name="bench_sdv")
        set_audit(study, actor=actor, reason=REASON)
        study.save()
        site = Site(study=study, number="1", name="Bench site", country="FR")
        set_audit(site, actor=actor, reason=REASON)
        site.save()
        form = FormDefinition(study=study, oid="F.LB", name="Laboratory")
        visit_definition = VisitDefinition(study=study, oid="SE.WEEK4", name="Week 4", order=1)
        for obj in (form, visit_definition):
            set_audit(obj, actor=actor, reason=REASON)
            obj.save()
        items = {}
        for order, (code, label, unit, places, _) in enumerate(PANEL):
            # How the item names its analyte varies as metadata does: an OID ending in the test
            # code, a LOINC alias, or only a label.
            how = order % 3
            item = ItemDefinition(study=study, form=form, order=order, units=unit,
                                  data_type=ItemDefinition.DataType.FLOAT if places
                                  else ItemDefinition.DataType.INTEGER,
                                  oid=f"LB.{code}" if how == 0 else f"I.LAB{order:02d}", label=label,
                                  code=analytes.loinc_of(code) if how == 1 else "",
                                  code_system="http://loinc.org" if how == 1 else "")
            set_audit(item, actor=actor, reason=REASON)
            item.save()
            items[code] = item
        visits, points = {}, {}
        for spec in specs:
            subject = Subject(study=study, site=site, subject_id=f"B-{spec.number:04d}", status=Subject.Status.ENROLLED)
            set_audit(subject, actor=actor, reason=REASON)
            subject.save()
            visit = SubjectVisit(study=study, subject=subject, definition=visit_definition,
                                 actual_date=date(2025, 3, 4) + timedelta(days=spec.number % 5))
            set_audit(visit, actor=actor, reason=REASON)
            visit.save()
            visits[spec.number] = visit
            for expected in spec.expected:
                item = items[expected.code]
                point = DataPoint(study=study, subject=subject, visit=visit, form=form, item=item,
                                  raw_value=expected.edc, value_number=float(expected.edc),
                                  sdv_state=DataPoint.SdvState.TO_VERIFY)
                set_audit(point, actor=actor, reason=REASON)
                point.save()
                points[point.pk] = expected
        return study, visits, points

    # --- the measure ------------------------------------------------------------------------------
    def _measure(self, seed, pages, error_rate, workers, ablation, show, keep) -> tuple[dict, list[str]]:
        User = get_user_model()
        actor = User.objects.create(username=f"bench-sdv-{time.time_ns()}", is_superuser=True)
        specs = page_specs(seed, pages, error_rate)
        started = time.perf_counter()
        study, visits, points = self._study(specs, actor)
        documents = []
        for spec in specs:
            content, name = page_file(spec)
            if keep:
                Path(keep).mkdir(parents=True, exist_ok=True)
                (Path(keep) / name).write_bytes(content)
            document, _ = document_upload(study=study, subject_id=f"B-{spec.number:04d}", visit_oid="SE.WEEK4",
                                          upload=SimpleUploadedFile(name, content), actor=actor)
            documents.append(document)
        build_seconds = time.perf_counter() - started
        baseline_pages = self._rasterised(documents)
        load_before = os.getloadavg()[0]

        # tesseract alone, then the agent, then tesseract again: the mean of the two tesseract runs
        # is compared, so a load change during the run does not favour either side.
        tesseract_first = self._tesseract_alone(baseline_pages, workers)
        agent_seconds, output = self._agent(study, workers, steps=ocr.DEFAULT_STEPS)
        tesseract_second = self._tesseract_alone(baseline_pages, workers)
        tesseract_seconds = (tesseract_first + tesseract_second) / 2
        scores, lines = self._score(study, points, specs, show=show)
        result = {
            "pages": len(specs), "kinds": {k: sum(s.kind == k for s in specs) for k in KINDS},
            "values": scores.pop("values"), "planted_errors": scores.pop("planted"),
            **scores,
            "agent_seconds": round(agent_seconds, 2), "tesseract_seconds": round(tesseract_seconds, 2),
            "tesseract_runs": [round(tesseract_first, 2), round(tesseract_second, 2)],
            "time_ratio": round(agent_seconds / tesseract_seconds, 3), "workers": workers,
            "agent_verdicts": output.get("verdicts", {}), "agent_read_seconds": output.get("read_seconds"),
            "values_read_again": output.get("values_read_again"), "values_settled": output.get("values_settled"),
            "build_seconds": round(build_seconds, 2),
            "load_average_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)], "cpus": os.cpu_count(),
            "tesseract": ocr.tesseract_version(), "tesseract_config": ocr.TESSERACT_CONFIG,
            "dpi": settings.SDV_RENDER_DPI, "review_confidence": settings.SDV_REVIEW_CONFIDENCE,
        }
        lines.insert(0, f"{len(specs)} pages ({', '.join(f'{n} {k}' for k, n in result['kinds'].items())}), "
                        f"{result['values']} EDC values, {result['planted_errors']} planted errors; "
                        f"{workers} pages at once")
        lines.append(f"agent {agent_seconds:.1f}s, tesseract alone {tesseract_seconds:.1f}s "
                     f"(runs {tesseract_first:.1f}s, {tesseract_second:.1f}s): ratio {result['time_ratio']:.3f}")
        if ablation:
            result["ablation"] = self._ablation(study, points, specs, workers, lines)
        return result, lines

    def _rasterised(self, documents: list[SourceDocument]) -> list[tuple[str, int]]:
        """The pages tesseract alone reads: each image file as stored, each PDF page as the agent
        rasterises it (a scan's embedded image, else rendered at SDV_RENDER_DPI), saved as PNG."""
        out, folder = [], Path(settings.MEDIA_ROOT) / "rasterised"
        folder.mkdir(parents=True, exist_ok=True)
        for document in documents:
            path = document_path(document)
            if document.content_type == files.PDF:
                for number in range(1, document.page_count + 1):
                    image, dpi = files.pdf_page_image(path, number, dpi=settings.SDV_RENDER_DPI)
                    target = folder / f"{document.pk}-{number}.png"
                    image.save(target)
                    out.append((str(target), dpi))
            else:
                out.append((str(path), 300))
        return out

    @staticmethod
    def _tesseract_alone(pages: list[tuple[str, int]], workers: int) -> float:
        os.environ.setdefault("OMP_THREAD_LIMIT", "1")
        pytesseract.pytesseract.tesseract_cmd = settings.TESSERACT_CMD
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(lambda page: pytesseract.image_to_data(
                page[0], lang="eng", config=f"{ocr.TESSERACT_CONFIG} --dpi {page[1]}"), pages))
        return time.perf_counter() - started

    @staticmethod
    def _agent(study, workers: int, *, steps, reread: bool = False) -> tuple[float, dict]:
        config = {"steps": list(steps)}
        if reread:
            config["reread"] = True
        step = SimpleNamespace(input={"study_id": study.pk, "config": config}, policy={}, run_id=0, pk=0)
        previous = settings.SDV_OCR_WORKERS
        settings.SDV_OCR_WORKERS = workers
        try:
            started = time.perf_counter()
            output = DataVerificationAgent().run(step=step)
            return time.perf_counter() - started, output
        finally:
            settings.SDV_OCR_WORKERS = previous

    @staticmethod
    def _score(study, points: dict, specs: list[PageSpec], *, show: int) -> tuple[dict, list[str]]:
        verdicts = dict(SourceVerification.objects.filter(study=study).values_list("data_point_id", "verdict"))
        details = {v.data_point_id: v for v in SourceVerification.objects.filter(study=study)}
        tp = fp = fn = clean = clean_verified = absent = absent_ok = 0
        outcome: dict[str, int] = {}
        lines, shown = [], 0
        by_page = {s.number: s for s in specs}
        for pk, expected in points.items():
            verdict = verdicts.get(pk, "missing")
            if not expected.printed:
                absent += 1
                absent_ok += verdict == SourceVerification.Verdict.NOT_FOUND
                continue
            outcome[verdict] = outcome.get(verdict, 0) + 1
            if expected.error:
                tp += verdict == "discrepancy"
                fn += verdict != "discrepancy"
            else:
                clean += 1
                clean_verified += verdict == "verified"
                fp += verdict == "discrepancy"
            wrong = (expected.error and verdict != "discrepancy") or (not expected.error and verdict != "verified")
            if wrong and shown < show:
                shown += 1
                v = details.get(pk)
                spec = by_page[expected.page]
                lines.append(f"  page {expected.page} ({spec.kind}, {spec.degradation.describe()}) {expected.code}: "
                             f"EDC {expected.edc}{f' ({expected.error} error)' if expected.error else ''}, "
                             f"page {expected.source} -> {verdict}"
                             + (f" [{v.source_name!r} {v.source_value!r} {v.source_unit!r}: {v.explanation}]"
                                if v else ""))
        precision = tp / (tp + fp) if tp + fp else 1.0
        recall = tp / (tp + fn) if tp + fn else 1.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return {"values": sum(1 for e in points.values() if e.printed), "planted": tp + fn,
                "true_positives": tp, "false_positives": fp, "false_negatives": fn,
                "precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4),
                "verified_share": round(clean_verified / clean, 4) if clean else None,
                "verdicts": outcome, "absent_values": absent,
                "absent_not_found_share": round(absent_ok / absent, 4) if absent else None}, lines

    def _ablation(self, study, points, specs, workers, lines) -> dict:
        out = {}
        variants = {"all": ocr.DEFAULT_STEPS, **{f"without {s}": tuple(x for x in ocr.DEFAULT_STEPS if x != s)
                                                 for s in ocr.DEFAULT_STEPS}, "none": ()}
        for name, steps in variants.items():
            seconds, _ = self._agent(study, workers, steps=steps, reread=True)
            scores, _ = self._score(study, points, specs, show=0)
            out[name] = {"seconds": round(seconds, 2), "f1": scores["f1"], "verified_share": scores["verified_share"],
                         "false_positives": scores["false_positives"], "false_negatives": scores["false_negatives"]}
            lines.append(f"ablation {name}: {out[name]}")
        return out
