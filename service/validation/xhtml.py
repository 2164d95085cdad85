"""FHIR's narrative rules (R4 Narrative.div: txt-1, txt-2, the ``htmlChecks()`` function).

R4 (narrative.html): "The XHTML content SHALL NOT contain a head, a body element, external stylesheet
references, deprecated elements, scripts, forms, base/link/xlink, frames, iframes, objects or event
related attributes (e.g. onClick)", it is a ``div`` in the XHTML namespace, uses only "the basic html
formatting elements and attributes described in chapters 7-11 (except section 4 of chapter 9) and 15
of the HTML 4.0 standard, <a> elements (either name or href), images and internally contained style
attributes" (txt-1), and "SHALL have some non-whitespace content" (txt-2). XHTML is XML: an entity
other than XML's five (``&reg;``) is not well-formed.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

XHTML_NS = "{http://www.w3.org/1999/xhtml}"
ELEMENTS = frozenset(
    [
        "p",
        "br",
        "div",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "a",
        "span",
        "b",
        "em",
        "i",
        "strong",
        "small",
        "big",
        "tt",
        "small",
        "dfn",
        "q",
        "var",
        "abbr",
        "acronym",
        "cite",
        "blockquote",
        "hr",
        "address",
        "bdo",
        "kbd",
        "q",
        "sub",
        "sup",
        "ul",
        "ol",
        "li",
        "dl",
        "dt",
        "dd",
        "pre",
        "table",
        "caption",
        "colgroup",
        "col",
        "thead",
        "tr",
        "tfoot",
        "tbody",
        "th",
        "td",
        "code",
        "samp",
        "img",
        "map",
        "area",
    ]
)
ATTRIBUTES = frozenset(
    [
        "title",
        "style",
        "class",
        "id",
        "lang",
        "xml:lang",
        "dir",
        "accesskey",
        "tabindex",
        "span",
        "width",
        "align",
        "valign",
        "char",
        "charoff",
        "abbr",
        "axis",
        "headers",
        "scope",
        "rowspan",
        "colspan",
        "summary",
        "border",
        "frame",
        "rules",
        "cellspacing",
        "cellpadding",
        "name",
        "href",
        "src",
        "alt",
        "height",
        "start",
        "type",
        "value",
        "compact",
        "cite",
        "datetime",
        "hreflang",
        "rel",
        "rev",
        "shape",
        "coords",
        "charset",
        "longdesc",
        "usemap",
        "nohref",
        "xmlns",
    ]
)
_XML_NS = "{http://www.w3.org/XML/1998/namespace}"


def problems(div: str) -> list[str]:
    """What breaks the rules in one ``Narrative.div`` (empty when it keeps them)."""
    try:
        root = ET.fromstring(div)
    except ET.ParseError as error:
        return [f"not well-formed XHTML: {error}"]
    if root.tag != XHTML_NS + "div":
        return ["the narrative must be a <div> in the XHTML namespace"]
    found: list[str] = []
    text = False
    for el in root.iter():
        tag = el.tag
        if not isinstance(tag, str):
            continue
        if not tag.startswith(XHTML_NS):
            found.append(f"element {tag} is not XHTML")
            continue
        name = tag[len(XHTML_NS) :]
        if name not in ELEMENTS:
            found.append(f"element <{name}> is not allowed in a narrative")
        for attr, value in el.attrib.items():
            plain = "xml:" + attr[len(_XML_NS) :] if attr.startswith(_XML_NS) else attr
            if plain not in ATTRIBUTES:
                found.append(f"attribute {plain} of <{name}> is not allowed in a narrative")
            elif plain in ("href", "src") and value.strip().lower().startswith("javascript:"):
                found.append(f"{plain} of <{name}> is a script")
        text = text or bool((el.text or "").strip() or ((el.tail or "").strip() and el is not root))
        text = text or name == "img"
    if not text:
        found.append("the narrative has no non-whitespace content")
    return found
