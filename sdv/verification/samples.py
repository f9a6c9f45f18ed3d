"""Generated lab report pages: what bench_sdv measures on, what the tests read and what the demo
plants. Drawn with Pillow in Debian's DejaVu fonts (the Makefile installs fonts-dejavu-core),
then degraded the way real scans and faxes are: rotated (a few degrees, or a page fed sideways),
blurred, grainy, JPEG-compressed, faxed (thresholded, half the vertical resolution, speckle).

A page is a list of `LabLine`s (test name as the lab prints it, value, unit, reference range,
flag); layouts vary (columns, header or none, flags in a column or beside the value, ranges in
parentheses). `lab_report_pdf_text` writes a PDF with a real text layer (Helvetica, no image),
`images_pdf` an image-only PDF as a scanner does."""

import io
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
FONTS = ("DejaVuSans", "DejaVuSerif", "DejaVuSansCondensed", "DejaVuSansMono")
A4_INCHES = (8.27, 11.69)


@dataclass
class LabLine:
    name: str
    value: str
    unit: str
    range: str = ""
    flag: str = ""


@dataclass
class Layout:
    font: str = "DejaVuSans"
    size: float = 10.0  # points
    header: bool = True
    flag_column: bool = True
    range_parentheses: bool = False
    leading: float = 1.7  # line pitch / font size
    # inches from the left margin: name, value, unit, range, flag
    columns: tuple[float, ...] = (0.0, 2.6, 3.7, 4.8, 6.3)


def layout_random(rng: random.Random) -> Layout:
    offset = rng.uniform(-0.2, 0.3)
    return Layout(font=rng.choice(FONTS), size=rng.choice((9.5, 10, 10.5, 11)), header=rng.random() < 0.8,
                  flag_column=rng.random() < 0.6, range_parentheses=rng.random() < 0.3,
                  leading=rng.uniform(1.55, 1.9),
                  columns=(0.0, 2.5 + offset, 3.55 + offset, 4.75 + offset, 6.2 + offset))


def _font(name: str, pixels: int, bold: bool = False) -> ImageFont.FreeTypeFont:
    path = FONT_DIR / f"{name}{'-Bold' if bold else ''}.ttf"
    if not path.exists():
        path = FONT_DIR / f"{name}.ttf"
    return ImageFont.truetype(str(path), pixels)


def lab_report_image(lines: list[LabLine], *, subject_id: str, visit: str, collected: str, dpi: int = 300,
                     layout: Layout | None = None, title: str = "CENTRAL LABORATORY REPORT") -> Image.Image:
    """An A4 lab report page, grayscale, at `dpi`."""
    layout = layout or Layout()
    width, height = round(A4_INCHES[0] * dpi), round(A4_INCHES[1] * dpi)
    image = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(image)
    px = round(layout.size * dpi / 72)
    body, bold, big = _font(layout.font, px), _font(layout.font, px, bold=True), _font(layout.font, round(px * 1.4),
                                                                                      bold=True)
    left, y = round(0.8 * dpi), round(0.8 * dpi)
    pitch = round(px * layout.leading)
    draw.text((left, y), title, font=big, fill=0)
    y += round(pitch * 1.8)
    draw.text((left, y), f"Subject: {subject_id}    Visit: {visit}    Collected: {collected}", font=body, fill=0)
    y += round(pitch * 1.2)
    draw.text((left, y), "Specimen: serum / whole blood    Report status: final", font=body, fill=0)
    y += round(pitch * 1.6)
    x = [left + round(c * dpi) for c in layout.columns]
    if layout.header:
        heads = ["Test", "Result", "Units", "Reference range"] + (["Flag"] if layout.flag_column else [])
        for column, text in zip(x, heads, strict=False):
            draw.text((column, y), text, font=bold, fill=0)
        y += round(pitch * 1.3)
    for line in lines:
        value = line.value if layout.flag_column or not line.flag else f"{line.value} {line.flag}"
        reference = f"({line.range})" if layout.range_parentheses and line.range else line.range
        cells = [line.name, value, line.unit, reference] + ([line.flag] if layout.flag_column else [])
        for column, text in zip(x, cells, strict=False):
            if text:
                draw.text((column, y), text, font=body, fill=0)
        y += pitch
    y += pitch
    draw.text((left, y), "Values outside the reference range are flagged H (high) or L (low).", font=body, fill=0)
    return image


@dataclass
class Degradation:
    angle: float = 0.0  # degrees counter-clockwise
    sideways: bool = False  # fed sideways: a quarter turn
    blur: float = 0.0  # Gaussian radius, pixels
    noise: float = 0.0  # Gaussian grain, grey levels
    fax: bool = False
    jpeg_quality: int | None = None

    def describe(self) -> str:
        parts = [f"rotated {self.angle:+.1f}°" if self.angle else "", "sideways" if self.sideways else "",
                 f"blur {self.blur:.1f}" if self.blur else "", f"noise {self.noise:.0f}" if self.noise else "",
                 "fax" if self.fax else "", f"jpeg q{self.jpeg_quality}" if self.jpeg_quality else ""]
        return ", ".join(p for p in parts if p) or "clean"


def degradation_random(rng: random.Random, *, jpeg: bool) -> Degradation:
    fax = rng.random() < 0.12
    return Degradation(
        angle=rng.uniform(-4, 4) if rng.random() < 0.6 else 0.0,
        sideways=rng.random() < 0.06,
        blur=0.0 if fax or rng.random() > 0.35 else rng.uniform(0.6, 1.4),
        noise=0.0 if fax or rng.random() > 0.35 else rng.uniform(10, 30),
        fax=fax, jpeg_quality=rng.randint(40, 75) if jpeg else None)


def degrade(image: Image.Image, degradation: Degradation, *, seed: int = 0) -> Image.Image:
    out = image
    if degradation.angle:
        out = out.rotate(degradation.angle, resample=Image.Resampling.BICUBIC, fillcolor=255, expand=False)
    if degradation.blur:
        out = out.filter(ImageFilter.GaussianBlur(degradation.blur))
    rng = np.random.default_rng(seed)
    if degradation.noise:
        pixels = np.asarray(out).astype(np.float32) + rng.normal(0, degradation.noise, (out.height, out.width))
        out = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    if degradation.fax:
        pixels = np.asarray(out.filter(ImageFilter.GaussianBlur(0.6))) > 150
        half = pixels[::2]  # 100 lines per inch where the page is 200
        pixels = np.repeat(half, 2, axis=0)[: out.height]
        speckle = rng.random(pixels.shape) < 0.0015
        out = Image.fromarray(np.where(pixels ^ speckle, 255, 0).astype(np.uint8))
    if degradation.sideways:
        out = out.transpose(Image.Transpose.ROTATE_270)
    return out


def image_bytes(image: Image.Image, kind: str, *, quality: int = 75, dpi: int = 300) -> bytes:
    buffer = io.BytesIO()
    if kind == "jpeg":
        image.save(buffer, format="JPEG", quality=quality, dpi=(dpi, dpi))
    elif kind == "png":
        image.save(buffer, format="PNG", dpi=(dpi, dpi))
    elif kind == "tiff":
        image.save(buffer, format="TIFF", dpi=(dpi, dpi), compression="tiff_lzw")
    else:
        raise ValueError(kind)
    return buffer.getvalue()


def images_pdf(images: list[Image.Image], *, dpi: int = 300) -> bytes:
    """An image-only PDF (no text layer), as a scanner writes one."""
    buffer = io.BytesIO()
    first, rest = images[0], images[1:]
    first.save(buffer, format="PDF", resolution=dpi, save_all=True, append_images=rest)
    return buffer.getvalue()


def tiff_pages(images: list[Image.Image], *, dpi: int = 300) -> bytes:
    buffer = io.BytesIO()
    images[0].save(buffer, format="TIFF", dpi=(dpi, dpi), save_all=True, append_images=images[1:],
                   compression="tiff_lzw")
    return buffer.getvalue()


def _pdf_text(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def lab_report_pdf_text(lines: list[LabLine], *, subject_id: str, visit: str, collected: str) -> bytes:
    """A one-page A4 PDF whose lines are a real text layer (Helvetica), as a lab system exports it."""
    heading = f"Subject: {subject_id}   Visit: {visit}   Collected: {collected}"
    commands = ["BT /F1 14 Tf 50 790 Td (CENTRAL LABORATORY REPORT) Tj ET",
                f"BT /F1 10 Tf 50 760 Td ({_pdf_text(heading)}) Tj ET"]
    columns = (50, 230, 300, 380, 500)
    y = 720
    for column, head in zip(columns, ("Test", "Result", "Units", "Reference range", "Flag"), strict=True):
        commands.append(f"BT /F1 10 Tf {column} {y} Td ({head}) Tj ET")
    for line in lines:
        y -= 18
        for column, text in zip(columns, (line.name, line.value, line.unit, line.range, line.flag), strict=True):
            if text:
                commands.append(f"BT /F1 10 Tf {column} {y} Td ({_pdf_text(text)}) Tj ET")
    stream = "\n".join(commands).encode("latin-1")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
    ]
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(f"{number} 0 obj\n".encode() + body + b"\nendobj\n")
    xref = out.tell()
    out.write(f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode())
    for offset in offsets:
        out.write(f"{offset:010d} 00000 n \n".encode())
    out.write(f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode())
    return out.getvalue()
