"""Clean-up of a page image and OCR with tesseract (through pytesseract), keeping every word with
its box and confidence (`image_to_data`).

Clean-up, each step cheap next to tesseract itself (bench_sdv --ablation measures what each buys
on degraded pages, and only what pays is on by default):
- orientation: a page scanned sideways is turned upright (quarter turns), from which direction
  the text lines run (projection profiles);
- deskew: the angle of the text lines, from the projection profile of the dark pixels at a
  quarter of the resolution, sharpest over -6..6 degrees, refined to 0.1 degree;
- scale: a page scanned at high resolution is halved when its text lines stay tall enough for
  tesseract, which then reads it faster and as well;
- denoise: only a page whose background is noisy (speckle, grain) is smoothed (a 3x3 box blur);
- binarise: Otsu's threshold of the page's histogram;
- crop: the margins without ink are cut off before OCR (boxes are shifted back);
- reread: every value is read a second time from the grey page, enlarged (values_reread).
Tesseract runs one process per page with OMP_THREAD_LIMIT=1 (its own threads cost more than
they bring); a DataVerification run reads several pages at once, one per core.
"""

import os
import tempfile
from dataclasses import dataclass, field

import numpy as np
import pytesseract
from django.conf import settings
from PIL import Image, ImageFilter, ImageOps

DEFAULT_STEPS = ("orientation", "deskew", "scale", "denoise", "binarise", "crop", "reread")
ALL_STEPS = DEFAULT_STEPS
TESSERACT_CONFIG = "--psm 6 -c tessedit_do_invert=0"
SKEW_LIMIT = 6.0  # degrees searched either way
SKEW_MIN = 0.3  # degrees below which a page is left as it is
NOISE_STD = 12.0  # background standard deviation (grey levels) above which a page is denoised
SIDEWAYS_RATIO = 1.3  # across / along sharpness from which a page is turned a quarter
DOUBTFUL_CONFIDENCE = 45  # mean word confidence below which a page is tried upside down
SCALE_MIN_TEXT = 30  # pixels of text line height from which halving keeps it tall enough for tesseract


class OcrUnavailable(RuntimeError):
    """tesseract is not installed (or not at settings.TESSERACT_CMD)."""


@dataclass
class Prepared:
    image: Image.Image  # the grey page at OCR scale, turned and deskewed (the second readings are cut from it)
    size: tuple[int, int] = (0, 0)  # the page image the boxes are in: full resolution, turned and deskewed
    rotation: int = 0  # quarter turns applied, degrees counter-clockwise
    skew: float = 0.0  # degrees counter-clockwise applied after the rotation
    scale: float = 1.0  # the OCR image's size / the page's size
    offset: tuple[int, int] = (0, 0)  # where the OCR image's origin is in the scaled page
    ocr_image: Image.Image | None = None  # what tesseract reads (scaled, cleaned, cropped)
    steps: list[str] = field(default_factory=list)


@dataclass
class Word:
    text: str
    confidence: float  # 0-100
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in the page image (after rotation and deskew)


# --- Clean-up ---------------------------------------------------------------------------------------
def _profile_score(ys: np.ndarray, xs: np.ndarray, angle: float) -> float:
    """How sharply the dark pixels fall into horizontal lines when sheared by `angle` degrees."""
    projected = ys + xs * np.tan(np.deg2rad(angle))
    counts = np.bincount((projected - projected.min()).astype(np.int64))
    return float(np.dot(counts, counts))


def _dark_pixels(small: np.ndarray, most: int = 30_000) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.nonzero(small < min(160, _otsu(small)))
    step = max(1, len(ys) // most)  # a sample is as sharp as the whole, and cheaper
    return ys[::step].astype(np.float64), xs[::step].astype(np.float64) - small.shape[1] / 2


def skew_of(small: np.ndarray) -> float:
    """The shear (degrees) that makes the text lines sharpest: 0.5 degree steps, then 0.1."""
    ys, xs = _dark_pixels(small)
    if len(ys) < 50:
        return 0.0
    coarse = max(np.arange(-SKEW_LIMIT, SKEW_LIMIT + 1e-9, 0.5), key=lambda a: _profile_score(ys, xs, a))
    fine = max(np.arange(coarse - 0.4, coarse + 0.4 + 1e-9, 0.1), key=lambda a: _profile_score(ys, xs, a))
    return float(round(fine, 2))


def text_height(small: np.ndarray, factor: int) -> float:
    """The median height of the page's text lines, in full-resolution pixels: the runs of rows
    with ink in the row profile (the background's speckle, spread evenly over rows, taken off)."""
    rows = (small < min(160, _otsu(small))).sum(axis=1).astype(np.float64)
    rows -= np.percentile(rows, 20)
    if rows.max() <= 0:
        return 0.0
    inked = rows > 0.15 * np.percentile(rows[rows > 0], 90)
    edges = np.flatnonzero(np.diff(np.concatenate(([0], inked.astype(np.int8), [0]))))
    runs = edges[1::2] - edges[::2]
    runs = runs[runs >= 2]
    return float(np.median(runs)) * factor if runs.size else 0.0


def _otsu(pixels: np.ndarray) -> int:
    histogram = np.bincount(pixels.ravel(), minlength=256).astype(np.float64)
    weight = np.cumsum(histogram)
    total = weight[-1]
    mean = np.cumsum(histogram * np.arange(256))
    between = (mean[-1] * weight / total - mean) ** 2 / (weight * (total - weight) / total + 1e-12)
    return int(np.argmax(between))


def background_noise(pixels: np.ndarray) -> float:
    """Standard deviation of the background (pixels lighter than Otsu's threshold) of a central patch."""
    h, w = pixels.shape
    patch = pixels[h // 3: h // 3 + 512, w // 4: w // 4 + 512]
    light = patch[patch > _otsu(patch)]
    return float(light.std()) if light.size else 0.0


def prepare(image: Image.Image, *, steps=DEFAULT_STEPS) -> Prepared:
    """The page made ready for OCR; what was done is recorded, so boxes map back to the page image."""
    steps = set(steps)
    gray = image if image.mode == "L" else image.convert("L")
    factor = 4 if min(gray.size) >= 1200 else 2
    small = np.asarray(gray.reduce(factor))
    noisy = "denoise" in steps and background_noise(np.asarray(gray)) > NOISE_STD
    done = Prepared(image=gray)
    if "orientation" in steps and _is_sideways(small):
        gray = gray.transpose(Image.Transpose.ROTATE_90)
        small = np.ascontiguousarray(np.rot90(small))
        done.rotation = 90
        done.steps.append("orientation")
    done.size = gray.size  # rotate() below keeps the size: the boxes' page is as large as this
    angle = skew_of(small) if "deskew" in steps else 0.0
    if abs(angle) >= SKEW_MIN:
        small = np.asarray(Image.fromarray(small).rotate(-angle, resample=Image.Resampling.BILINEAR, fillcolor=255))
    if "scale" in steps and text_height(small, factor) >= SCALE_MIN_TEXT:
        gray = gray.reduce(2)  # halved first: rotating a quarter of the pixels costs a quarter
        done.scale = 0.5
        done.steps.append("scale")
    if abs(angle) >= SKEW_MIN:
        # The shear that straightens the lines is the rotation that does (small angles).
        gray = gray.rotate(-angle, resample=Image.Resampling.BILINEAR, fillcolor=255)
        done.skew = -angle
        done.steps.append("deskew")
    done.image = ocr_image = gray
    if noisy:
        ocr_image = ocr_image.filter(ImageFilter.BoxBlur(1))
        done.steps.append("denoise")
    pixels = np.asarray(ocr_image)
    if "binarise" in steps:
        pixels = np.where(pixels > _otsu(pixels), 255, 0).astype(np.uint8)
        ocr_image = Image.fromarray(pixels)
        done.steps.append("binarise")
    if "crop" in steps:
        ink = pixels < 128
        rows, columns = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
        if rows.size and columns.size:
            margin = 8
            x0, y0 = max(0, int(columns[0]) - margin), max(0, int(rows[0]) - margin)
            x1, y1 = min(pixels.shape[1], int(columns[-1]) + margin), min(pixels.shape[0], int(rows[-1]) + margin)
            ocr_image = ocr_image.crop((x0, y0, x1, y1))
            done.offset = (x0, y0)
            done.steps.append("crop")
    done.ocr_image = ocr_image
    return done


def _sharpest(ys: np.ndarray, xs: np.ndarray) -> float:
    return max(_profile_score(ys, xs, angle) for angle in np.arange(-SKEW_LIMIT, SKEW_LIMIT + 1e-9, 1.0))


def orientation_scores(small: np.ndarray) -> tuple[float, float]:
    """(along, across): how sharply the ink falls into lines read as the page stands, and turned
    a quarter, each at its best angle within the skew limit (a skewed sideways page too)."""
    ys, xs = _dark_pixels(small)
    if len(ys) < 50:
        return 0.0, 0.0
    return _sharpest(ys, xs), _sharpest(xs + small.shape[1] / 2, ys - small.shape[0] / 2)


def _is_sideways(small: np.ndarray) -> bool:
    """Text lines run top to bottom: the profile is much sharper across than along."""
    along, across = orientation_scores(small)
    return across > SIDEWAYS_RATIO * along


# --- Tesseract --------------------------------------------------------------------------------------
def tesseract_version() -> str:
    pytesseract.pytesseract.tesseract_cmd = settings.TESSERACT_CMD
    try:
        return str(pytesseract.get_tesseract_version())
    except (pytesseract.TesseractNotFoundError, OSError) as error:
        raise OcrUnavailable(f"tesseract is not installed ({settings.TESSERACT_CMD!r}): {error}") from None


def tesseract_words(image: Image.Image, *, dpi: int, config: str = TESSERACT_CONFIG) -> list[Word]:
    """Every word tesseract reads on `image`, with its confidence and box (in the image's pixels)."""
    pytesseract.pytesseract.tesseract_cmd = settings.TESSERACT_CMD
    os.environ.setdefault("OMP_THREAD_LIMIT", "1")  # see the module's docstring
    with tempfile.TemporaryDirectory(prefix="trialops-ocr-") as directory:
        path = os.path.join(directory, "page.pgm")  # uncompressed: nothing to encode or decode
        image.save(path)
        try:
            data = pytesseract.image_to_data(path, lang="eng", config=f"{config} --dpi {dpi}",
                                             output_type=pytesseract.Output.DICT)
        except pytesseract.TesseractNotFoundError as error:
            raise OcrUnavailable(f"tesseract is not installed ({settings.TESSERACT_CMD!r}): {error}") from None
    words = []
    for text, confidence, left, top, width, height in zip(data["text"], data["conf"], data["left"], data["top"],
                                                          data["width"], data["height"], strict=True):
        text = (text or "").strip()
        if text and float(confidence) >= 0:
            words.append(Word(text, float(confidence), (int(left), int(top), int(left + width), int(top + height))))
    return words


def page_ocr(image: Image.Image, *, dpi: int, steps=DEFAULT_STEPS) -> tuple[Prepared, list[Word]]:
    """Clean the page up and read it; the words' boxes are in the full-resolution page, turned and
    deskewed (`prepared.size`).
    A page read with low confidence throughout is read again upside down (a sideways page may
    have been turned the wrong way, and profiles cannot tell up from down); the better reading wins."""
    prepared = prepare(image, steps=steps)
    words = _read(prepared, dpi)
    if "orientation" in steps and mean_confidence(words) < DOUBTFUL_CONFIDENCE:
        turned = prepare(image.rotate(180), steps=steps)
        turned.rotation = (turned.rotation + 180) % 360
        again = _read(turned, dpi)
        if mean_confidence(again) > mean_confidence(words) + 10:
            turned.steps.append("upside down")
            return turned, again
    return prepared, words


def mean_confidence(words: list[Word]) -> float:
    return sum(w.confidence for w in words) / len(words) if len(words) >= 5 else 0.0


def _read(prepared: Prepared, dpi: int) -> list[Word]:
    words = tesseract_words(prepared.ocr_image, dpi=max(1, round(dpi * prepared.scale)))
    x0, y0 = prepared.offset
    back = 1 / prepared.scale
    for word in words:
        a, b, c, d = word.box
        word.box = (round((a + x0) * back), round((b + y0) * back), round((c + x0) * back), round((d + y0) * back))
    return words


def transformed(image: Image.Image, *, rotation: int, skew: float) -> Image.Image:
    """The page image as the agent read it (for crops), from the page as stored."""
    gray = image if image.mode == "L" else image.convert("L")
    if rotation:
        gray = gray.rotate(rotation, expand=True)  # quarter turns, counter-clockwise, as prepare() applies them
    if skew:
        gray = gray.rotate(skew, resample=Image.Resampling.BILINEAR, fillcolor=255)
    return gray


# --- A second reading of the values ------------------------------------------------------------------
SECOND_SCALE = 2
STRIP_MAX_HEIGHT = 30_000


def value_crops(page: Image.Image, boxes: list[tuple[int, int, int, int]], *, noisy: bool = False,
                scale: float = 1.0) -> list[Image.Image]:
    """Each value's box cut from the grey page (before binarisation, which can erase a decimal
    point) with a margin, enlarged to twice the page's full resolution (smoothed if the page is
    grainy): what `crops_read` reads a second time."""
    crops = []
    enlarge = SECOND_SCALE / scale
    for box in boxes:
        x0, y0, x1, y1 = (round(v * scale) for v in box)
        height = max(1, y1 - y0)
        pad_x, pad_y = round(0.6 * height), round(0.35 * height)
        crop = page.crop((max(0, x0 - pad_x), max(0, y0 - pad_y), min(page.width, x1 + pad_x),
                          min(page.height, y1 + pad_y)))
        crop = crop.resize((max(1, round(crop.width * enlarge)), max(1, round(crop.height * enlarge))),
                           Image.Resampling.BICUBIC)
        if noisy:  # grain enlarged is grain still: smoothed at the larger size, where strokes are thick
            crop = crop.filter(ImageFilter.GaussianBlur(SECOND_SCALE))
        crops.append(ImageOps.autocontrast(crop, cutoff=1))
    return crops


def crops_read(crops: list[Image.Image], *, dpi: int) -> list[tuple[str, float]]:
    """The second reading of values: the crops (of any pages) stacked into one strip, one
    tesseract call for all (most of a call on a few words is tesseract starting). Two readings
    that agree confirm each other; readings that differ make the value doubtful
    (sdv.verification.matching). Returns (text, confidence) per crop ("" if none)."""
    if not crops:
        return []
    gap = max(c.height for c in crops)
    # tesseract reads images of at most 32767 pixels a side: a long list is read in several strips
    per_strip = max(1, STRIP_MAX_HEIGHT // (max(c.height for c in crops) + gap))
    if len(crops) > per_strip:
        return [r for start in range(0, len(crops), per_strip)
                for r in crops_read(crops[start:start + per_strip], dpi=dpi)]
    strip = Image.new("L", (max(c.width for c in crops) + 2 * gap, sum(c.height + gap for c in crops) + gap), 255)
    spans, y = [], gap
    for crop in crops:
        strip.paste(crop, (gap, y))
        spans.append((y, y + crop.height))
        y += crop.height + gap
    words = tesseract_words(strip, dpi=dpi * SECOND_SCALE)
    out = []
    for top, bottom in spans:
        inside = sorted((w for w in words if top <= (w.box[1] + w.box[3]) / 2 <= bottom), key=lambda w: w.box[0])
        out.append(("".join(w.text for w in inside), min((w.confidence for w in inside), default=0.0)))
    return out


def values_reread(page: Image.Image, boxes: list[tuple[int, int, int, int]], *, dpi: int,
                  noisy: bool = False, scale: float = 1.0) -> list[tuple[str, float]]:
    """The values of one page read a second time (value_crops, then crops_read)."""
    return crops_read(value_crops(page, boxes, noisy=noisy, scale=scale), dpi=dpi)
