"""What an uploaded file is, whether it is safe to read, and its pages.

Hostile input first: the type comes from the magic bytes, never the name; an image's pixel count
is checked from its header before anything is decoded (a decompression bomb is refused, not
decoded), and so is every page of a PDF at the resolution it would be rendered at; encrypted PDFs
are refused (a password-protected source is not readable, and one encrypted with an empty
password still hides its permissions), malformed ones too. Every check runs at upload, so what
is stored can be read.

Pages: a PDF page with a text layer gives its words and boxes directly (pdfplumber); a scanned
one (a single image covering the page) gives its image as embedded, any other is rendered
(pypdfium2) for OCR; PNG, JPEG and (multi-page) TIFF pages are decoded by Pillow. Boxes are in
pixels of the page image at the resolution recorded with the page (SourcePage.dpi), so crops are
cut from the same image.
"""

import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pdfplumber
import pypdfium2 as pdfium
from PIL import Image, ImageOps, UnidentifiedImageError

PDF, PNG, JPEG, TIFF = "application/pdf", "image/png", "image/jpeg", "image/tiff"
EXTENSIONS = {PDF: ".pdf", PNG: ".png", JPEG: ".jpg", TIFF: ".tif"}
ACCEPTED = "PDF, PNG, JPEG or TIFF"
# A page counts as having a text layer when it holds at least this many words.
TEXT_LAYER_MIN_WORDS = 3
# PDFium is not thread-safe: one document call at a time in this process.
_PDFIUM = threading.Lock()


class DocumentRefused(ValueError):
    """The file cannot be accepted; the message says why, for the person who uploaded it."""


def sniff(head: bytes) -> str | None:
    """The type of a file from its first bytes, or None when it is none of the accepted types."""
    if head.startswith(b"%PDF-"):
        return PDF
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if head.startswith(b"\xff\xd8\xff"):
        return JPEG
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return TIFF
    return None


@contextmanager
def pixel_limit(max_pixels: int) -> Iterator[None]:
    """Pillow refuses images over `max_pixels` (its bomb check, made an error at any excess)."""
    previous = Image.MAX_IMAGE_PIXELS
    # Pillow raises only above twice its limit and warns between: both are refusals here.
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = previous


@dataclass
class Inspected:
    content_type: str
    pages: int


def document_inspect(path: Path, *, max_pages: int, max_pixels: int, dpi: int) -> Inspected:
    """Check that the file is an accepted type, within the limits and readable; raise DocumentRefused."""
    with open(path, "rb") as handle:
        kind = sniff(handle.read(8))
    if kind is None:
        raise DocumentRefused(f"The file is not a {ACCEPTED} file (its content says so, whatever its name).")
    if kind == PDF:
        pages = _pdf_inspect(path, max_pages=max_pages, max_pixels=max_pixels, dpi=dpi)
    else:
        pages = _image_inspect(path, kind, max_pages=max_pages, max_pixels=max_pixels)
    if pages == 0:
        raise DocumentRefused("The file has no page.")
    if pages > max_pages:
        raise DocumentRefused(f"The file has {pages} pages, over the limit of {max_pages}.")
    return Inspected(kind, pages)


def _too_many_pixels(width: int, height: int, max_pixels: int, what: str) -> DocumentRefused:
    return DocumentRefused(f"{what} is {width} x {height} pixels, over the limit of {max_pixels:,} pixels "
                           "(refused as a possible decompression bomb).")


def _image_inspect(path: Path, kind: str, *, max_pages: int, max_pixels: int) -> int:
    with pixel_limit(max_pixels):
        try:
            with Image.open(path) as image:  # reads the header only
                frames = getattr(image, "n_frames", 1)
                if frames > max_pages:
                    raise DocumentRefused(f"The file has {frames} pages, over the limit of {max_pages}.")
                for number in range(frames):
                    image.seek(number)
                    width, height = image.size
                    if width * height > max_pixels:  # before decoding a single pixel of it
                        raise _too_many_pixels(width, height, max_pixels, f"Page {number + 1}")
                    image.load()
                return frames
        except DocumentRefused:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            raise DocumentRefused(f"The image is too large to decode safely ({error}).") from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as error:
            raise DocumentRefused(f"The {EXTENSIONS[kind][1:].upper()} file is damaged and cannot be read "
                                  f"({type(error).__name__}).") from None


def _pdf_inspect(path: Path, *, max_pages: int, max_pixels: int, dpi: int) -> int:
    try:
        with pdfplumber.open(path) as pdf:
            if pdf.doc.encryption:
                raise DocumentRefused("The PDF is encrypted: upload it without a password or encryption.")
    except DocumentRefused:
        raise
    except Exception as error:  # pdfminer raises many types (PDFSyntaxError, PSEOF, PDFPasswordIncorrect, ...)
        causes = [error, *error.args, error.__cause__, error.__context__]
        if any("password" in type(c).__name__.lower() or "encrypt" in str(c).lower() for c in causes if c):
            raise DocumentRefused("The PDF is encrypted: upload it without a password or encryption.") from None
        raise DocumentRefused(f"The PDF is malformed and cannot be read ({type(error).__name__}).") from None
    with _PDFIUM:
        try:
            document = pdfium.PdfDocument(str(path))
        except pdfium.PdfiumError as error:
            raise DocumentRefused(f"The PDF is malformed and cannot be read ({error}).") from None
        try:
            pages = len(document)
            if pages > max_pages:  # before looking at a single page of a file that claims a million
                raise DocumentRefused(f"The file has {pages} pages, over the limit of {max_pages}.")
            for number in range(pages):
                page = document[number]
                width, height = page.get_size()
                pixels = (width * dpi / 72) * (height * dpi / 72)
                if pixels > max_pixels:
                    raise _too_many_pixels(int(width * dpi / 72), int(height * dpi / 72), max_pixels,
                                           f"Page {number + 1} at {dpi} dpi")
                _pdf_images_inspect(page, number + 1, max_pixels=max_pixels)
            return pages
        finally:
            document.close()


def _pdf_images_inspect(page, number: int, *, max_pixels: int) -> None:
    """Refuse a page embedding an image of more than `max_pixels` (a small page can hold a huge
    scan: reading or rendering it decodes the whole image). The size is read from the image's
    dictionary, nothing is decoded; images inside form XObjects count too."""
    for image in page.get_objects(filter=[pdfium.raw.FPDF_PAGEOBJ_IMAGE]):
        try:
            width, height = image.get_px_size()
        except pdfium.PdfiumError:
            raise DocumentRefused(f"The PDF is malformed and cannot be read (an image of page {number} "
                                  "has no size).") from None
        if width * height > max_pixels:
            raise _too_many_pixels(width, height, max_pixels, f"An image on page {number}")


# --- Pages -----------------------------------------------------------------------------------------
@dataclass
class PageSource:
    """A page to read: its words when a PDF text layer gave them, else its image for OCR."""

    number: int
    width: int
    height: int
    dpi: int
    image: Image.Image | None = None
    words: list = field(default_factory=list)  # [(text, confidence, x0, y0, x1, y1)] from a text layer

    @property
    def has_text_layer(self) -> bool:
        return self.image is None


def document_pages(path: Path, content_type: str, *, dpi: int, max_pixels: int) -> Iterator[PageSource]:
    """The pages of a stored document, in order (images decoded lazily, one at a time)."""
    if content_type == PDF:
        yield from _pdf_pages(path, dpi=dpi)
        return
    with pixel_limit(max_pixels), Image.open(path) as image:
        for number in range(getattr(image, "n_frames", 1)):
            image.seek(number)
            page = _grayscale(image)
            yield PageSource(number + 1, page.width, page.height, dpi, image=page)


def _grayscale(image: Image.Image) -> Image.Image:
    image = ImageOps.exif_transpose(image)  # a phone photo's orientation tag
    if image.mode in ("RGBA", "LA", "P"):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, "white")
        image = Image.alpha_composite(background, image)
    return image.convert("L")


def _pdf_pages(path: Path, *, dpi: int) -> Iterator[PageSource]:
    scale = dpi / 72
    with pdfplumber.open(path) as pdf:
        for number, page in enumerate(pdf.pages, start=1):
            width, height = round(float(page.width) * scale), round(float(page.height) * scale)
            words = [(w["text"], 100.0, round(float(w["x0"]) * scale), round(float(w["top"]) * scale),
                      round(float(w["x1"]) * scale), round(float(w["bottom"]) * scale))
                     for w in page.extract_words(keep_blank_chars=False, use_text_flow=False)]
            page.close()
            if len(words) >= TEXT_LAYER_MIN_WORDS:
                yield PageSource(number, width, height, dpi, words=words)
            else:
                image, page_dpi = pdf_page_image(path, number, dpi=dpi)
                yield PageSource(number, image.width, image.height, page_dpi, image=image)


def _scanned_image(page):
    """The page's one image when the page is a scan (a single upright image covering it), else None."""
    objects = list(page.get_objects(max_depth=1))
    if len(objects) != 1 or objects[0].type != pdfium.raw.FPDF_PAGEOBJ_IMAGE:
        return None
    image = objects[0]
    left, bottom, right, top = image.get_bounds()
    width, height = page.get_size()
    a, b, c, d, _, _ = image.get_matrix().get()
    upright = a > 0 and d > 0 and abs(b) < 1e-6 and abs(c) < 1e-6
    covers = (right - left) >= 0.95 * width and (top - bottom) >= 0.95 * height
    return image if upright and covers else None


def pdf_page_image(path: Path, number: int, *, dpi: int) -> tuple[Image.Image, int]:
    """Page `number` (1-based) as a grayscale image, with its resolution: a scanned page's own
    image as embedded (decoded, not re-rendered: faster, and the scanner's resolution), any other
    page rendered at `dpi`."""
    with _PDFIUM:
        document = pdfium.PdfDocument(str(path))
        try:
            page = document[number - 1]
            scanned = _scanned_image(page)
            if scanned is not None:
                pixel_width, _ = scanned.get_px_size()
                bitmap = scanned.get_bitmap(render=False)
                return bitmap.to_pil().convert("L"), max(1, round(pixel_width / (page.get_size()[0] / 72)))
            return page.render(scale=dpi / 72, grayscale=True).to_pil().convert("L"), dpi
        finally:
            document.close()


def pdf_page_render(path: Path, number: int, *, dpi: int) -> Image.Image:
    """Page `number` (1-based) rendered as a grayscale image at `dpi`."""
    with _PDFIUM:
        document = pdfium.PdfDocument(str(path))
        try:
            return document[number - 1].render(scale=dpi / 72, grayscale=True).to_pil().convert("L")
        finally:
            document.close()


def page_image(path: Path, content_type: str, number: int, *, dpi: int, max_pixels: int) -> Image.Image:
    """One page as an image (what a crop is cut from) at the resolution it was read at: a PDF
    page with a text layer rendered at `dpi`, a scanned one as embedded."""
    if content_type == PDF:
        image, page_dpi = pdf_page_image(path, number, dpi=dpi)
        return image if page_dpi == dpi else pdf_page_render(path, number, dpi=dpi)
    with pixel_limit(max_pixels), Image.open(path) as image:
        image.seek(number - 1)
        return _grayscale(image)
