"""Reading XML from outside safely: files from an EDC, an upload or a partner are hostile until proven
otherwise (XXE, billion laughs, external DTDs, network fetches, gigantic text nodes).

Two layers: the prolog is read before any parsing and a file that declares a DOCTYPE or an ENTITY is
refused outright (no legitimate ODM file needs one); then lxml parses with entity resolution, DTD
loading, network access and huge trees all switched off, so even a declaration the first layer
missed is never expanded or fetched."""

import re
from collections.abc import Iterator
from pathlib import Path

from lxml import etree

from studies.ingest.base import ImportFailed

PROLOG_LIMIT = 64 * 1024  # a prolog longer than this is itself suspicious
ACCEPTED_ENCODINGS = {"utf-8", "utf8", "us-ascii", "ascii"}  # ASCII is a subset of UTF-8

_DECLARED_ENCODING = re.compile(rb"""^<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")


def check_prolog(path: Path) -> None:
    """Refuse DTDs and entity declarations, and text that is not UTF-8, before the parser runs."""
    with open(path, "rb") as handle:
        head = handle.read(PROLOG_LIMIT)
    if head.startswith((b"\xff\xfe", b"\xfe\xff")) or head[:4] in (b"\x00<\x00?", b"<\x00?\x00"):
        raise ImportFailed("The file is UTF-16 encoded; only UTF-8 XML is accepted.", where="start of file")
    head = head.removeprefix(b"\xef\xbb\xbf").lstrip()
    declared = _DECLARED_ENCODING.match(head)
    if declared and declared.group(1).decode("ascii").lower() not in ACCEPTED_ENCODINGS:
        raise ImportFailed(f"The file declares encoding {declared.group(1).decode('ascii')!r}; "
                           "only UTF-8 XML is accepted.", where="line 1 (XML declaration)")
    upper = head.upper()
    # Checked over the whole head, not only before the root tag: a declaration is never legitimate here.
    for marker, what in ((b"<!DOCTYPE", "a DOCTYPE (DTD) declaration"), (b"<!ENTITY", "an ENTITY declaration")):
        position = upper.find(marker)
        if position >= 0:
            line = head.count(b"\n", 0, position) + 1
            raise ImportFailed(f"The file contains {what}; DTDs and entities are refused "
                               "(they enable XXE and entity-expansion attacks).", where=f"line {line}")


def safe_iterparse(path: Path, *, events=("start", "end")) -> Iterator[tuple[str, etree._Element]]:
    """lxml iterparse with every dangerous feature off; syntax errors become ImportFailed with where."""
    check_prolog(path)
    parser = etree.iterparse(
        str(path), events=events, resolve_entities=False, load_dtd=False, no_network=True, huge_tree=False,
        dtd_validation=False, remove_comments=True, remove_pis=True,
    )
    try:
        first = True
        for event, element in parser:
            if first:
                first = False
                # Second layer: a DOCTYPE beyond the prolog window is still refused, never used.
                if element.getroottree().docinfo.doctype:
                    raise ImportFailed("The file contains a DOCTYPE (DTD) declaration; DTDs are refused.",
                                       where="prolog")
            yield event, element
    except etree.XMLSyntaxError as exc:
        raise syntax_error(exc)


def syntax_error(exc: etree.XMLSyntaxError) -> ImportFailed:
    line, column = exc.position if exc.position else (exc.lineno or 0, 0)
    message = exc.msg or str(exc)
    where = f"line {line}, column {column}"
    message = re.sub(r",? line \d+, column \d+$", "", message)
    if "encoding" in message.lower() or "utf-8" in message.lower():
        return ImportFailed(f"The file is not valid UTF-8 text: {message}", where=where)
    if "entity" in message.lower():
        return ImportFailed(f"Entities are not allowed: {message}", where=where)
    return ImportFailed(f"Malformed XML: {message}", where=where)


def release(element: etree._Element) -> None:
    """Free a processed element and the siblings before it (iterparse keeps them otherwise)."""
    element.clear(keep_tail=False)
    parent = element.getparent()
    if parent is not None:
        while element.getprevious() is not None:
            del parent[0]


def localname(element: etree._Element) -> str:
    tag = element.tag
    if not isinstance(tag, str):
        return ""
    return tag.rsplit("}", 1)[-1]


def namespace(element: etree._Element) -> str:
    tag = element.tag
    return tag[1:].split("}", 1)[0] if isinstance(tag, str) and tag.startswith("{") else ""
