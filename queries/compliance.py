"""The compliance check of a query text (ICH-GCP practice; DOMAIN.md, "Queries"), for every text a
site will read: generated from a template, reworded by the LLM service, or typed by a person.

    reasons = compliance_check(text, language="fr", context={"item": "Systolic BP", "visit": "Week 2"})
    if reasons: refuse, showing the reasons (English, one per problem, quoting the words at fault)

It refuses:
- leading wording: a suggested value or answer ("should be 120", "change to", "enter 12", "is it
  120?", "typo"), in the ten languages of queries.phrasebook;
- missing context: the text does not name the item (or, for a query about a visit, the visit)
  that the context says the query is about;
- direct patient identifiers: e-mail, phone, date of birth, record, insurance and NHS-like
  numbers, postal addresses, names after a title, initials, and any identifier the context knows
  (context["identifiers"]: {"initials": "JS", "date_of_birth": "1961-04-02", ...}). The
  pseudonymous subject id is not a direct identifier and is allowed;
- blaming tone ("you forgot", "careless", "wrong again", "obviously", and equivalents);
- overlong text: MAX_LENGTH characters (see there).

Patterns of the text's own language and of English are applied (English phrases turn up in texts
in every language); an unknown language gets all of them. The check is lexical: it catches the
usual wordings, not every paraphrase; a data manager still reviews Candidate queries.
"""

import re
import unicodedata
from collections import Counter

from agents.llm.redaction import redact_text

# A query asks one specific question. 500 characters hold form, visit, item, value, rule and the
# request to verify with room to spare (the longest template renders in about 300); a longer
# text carries several questions or an explanation the site does not need, and is answered
# later. A Japanese or Chinese character carries about twice as much, hence half the limit.
MAX_LENGTH = {"ja": 250, "zh": 250}
DEFAULT_MAX_LENGTH = 500

_VALUE = r"[\d\"'“‘«„「]"  # what a suggested value starts with: a digit or a quotation mark

LEADING = {
    "en": [r"\bshould (?:be|read|say|have been)\b", r"\bshould (?:it|this|that|the \w+) be\b",
           r"\b(?:must|has to|needs to) be\s+" + _VALUE,
           r"\b(?:change|correct|update|amend|modify|set)(?: (?:it|this|the (?:value|entry|date|data|result)))? to\s+"
           r"(?:" + _VALUE + r"|(?-i:[A-Z])|yes\b|no\b)",
           r"\breplace (?:it |this |the \w+ )?(?:with|by)\b", r"\benter\s+" + _VALUE, r"\binstead of\b",
           r"\bdid you mean\b", r"\bisn'?t it\b", r"\bsurely\b", r"\btypo\b",
           r"\b(?:probably|presumably|likely) (?:a|an) (?:typo|transcription|entry|unit) error\b",
           r"\b(?:is|was|could|would|might|can) (?:it|this|that|the (?:value|date|result|entry)) "
           r"(?:be |have been |actually |really )?[^?.]{0,30}\d[^?.]{0,12}\?"],
    "fr": [r"\bdevrai(?:t|ent) (?:être|correspondre|indiquer)\b", r"\bdoi(?:t|vent) être\s+" + _VALUE,
           r"\b(?:corrig|modifi|chang|rectifi|mett)\w*\s+(?:la valeur |la date |la donnée )?(?:en|à|pour)\s+"
           + _VALUE, r"\bremplac\w*\s+(?:\w+\s+)?par\b", r"\bsaisi(?:r|ssez)\s+" + _VALUE, r"\bau lieu de\b",
           r"\bne (?:serait|s'agirait)-(?:ce|il) pas\b", r"\b(?:faute|erreur) de frappe\b"],
    "de": [r"\b(?:sollte|müsste)\b[^.?!]{0,40}\b(?:sein|lauten|heißen)\b", r"\bmuss\s+" + _VALUE,
           r"\b(?:auf|in|zu)\s+" + _VALUE + r"[^.?!]{0,20}\b(?:ändern|abändern|korrigieren|berichtigen|setzen)\b",
           r"\b(?:ändern|korrigieren|berichtigen)\s+Sie\b[^.?!]{0,30}\b(?:auf|in|zu)\s+" + _VALUE,
           r"\bersetzen\b[^.?!]{0,30}\bdurch\b", r"\d[\d.,]*\s*\w{0,6}\s+eintragen\b",
           r"\b(?:statt|anstatt|anstelle)\b", r"\b(?:ist|war) es (?:nicht )?\d", r"\bmeinten Sie\b",
           r"\b(?:Tippfehler|Schreibfehler|Zahlendreher)\b"],
    "es": [r"\bdeber[ií]a (?:ser|decir|haber sido)\b", r"\bdebe ser\s+" + _VALUE,
           r"\b(?:cambi|corrig|corrij|corríj|modifi|actualic|actualiz)\w*\s+(?:el valor |la fecha |el dato )?"
           r"(?:a|por)\s+" + _VALUE, r"\b(?:sustitu|reemplac|reemplaz)\w*\s+(?:\w+\s+)?por\b",
           r"\b(?:introduzca|ingrese|registre|anote)\s+" + _VALUE, r"\ben (?:lugar|vez) de\b",
           r"\bno ser[ií]a\b", r"\berror (?:tipográfico|de transcripción)\b", r"\berrata\b"],
    "it": [r"\bdovrebbe (?:essere|riportare|indicare)\b", r"\bdeve essere\s+" + _VALUE,
           r"\b(?:corregg|corress|modific|cambi|aggiorn)\w*\s+(?:il valore |la data |il dato )?(?:in|a|con)\s+"
           + _VALUE, r"\bsostitu\w*\s+(?:\w+\s+)?con\b", r"\binserire?\s+" + _VALUE, r"\binserisca\s+" + _VALUE,
           r"\binvece di\b", r"\bal posto di\b", r"\berrore di (?:battitura|trascrizione)\b", r"\brefuso\b"],
    "pt": [r"\bdeveria (?:ser|estar|constar)\b", r"\bdeve ser\s+" + _VALUE,
           r"\b(?:corrij|corrig|alter|mud|atualiz|modifi)\w*\s+(?:o valor |a data |o dado )?para\s+" + _VALUE,
           r"\bsubstitu\w*\s+(?:\w+\s+)?por\b", r"\b(?:insira|inserir|registre|registe|digite)\s+" + _VALUE,
           r"\bem vez de\b", r"\bao invés de\b", r"\berro de (?:digitação|transcrição)\b"],
    "nl": [r"\bzou\b[^.?!]{0,40}\bmoeten (?:zijn|luiden)\b", r"\bmoet\b[^.?!]{0,20}\d[^.?!]{0,10}\bzijn\b",
           r"\b(?:wijzig|verander|corrigeer|corrigeren|pas)\w*\b[^.?!]{0,30}\b(?:in|naar)\s+" + _VALUE,
           r"\bvervang\w*\b[^.?!]{0,30}\bdoor\b", r"\b(?:vul|voer)\s+" + _VALUE + r"[^.?!]{0,15}\bin\b",
           r"\bin plaats van\b", r"\b(?:is|was) het (?:niet )?\d", r"\b(?:typfout|tikfout|typefout)\b"],
    "pl": [r"\bpowin\w*\s+(?:być|wynosić|brzmieć)\b",
           r"\b(?:zmie|zmia|popraw|skoryg|zaktualiz)\w*\s+(?:\w+\s+)?na\s+" + _VALUE,
           r"\bzastąp\w*\b[^.?!]{0,30}\b(?:na|przez)\b", r"\b(?:wpis|wprowad)\w*\s+" + _VALUE, r"\bzamiast\b",
           r"\bczy (?:to|nie) (?:jest |było |powinno )?[^?]{0,20}\d", r"\bliterówk\w*"],
    "ja": [r"(?:である|の)べき", r"はずです", r"のはず",
           r"(?:に|へ)(?:修正|訂正|変更)(?:して|し|を|願|下さい|ください|お願い)",
           r"と(?:入力|記入|修正)(?:して|し|ください|願)", r"ではないでしょうか", r"ではありませんか",
           r"じゃないですか", r"の代わりに", r"(?:入力|記入|タイプ)ミス", r"誤記"],
    "zh": [r"应(?:该|当)?(?:是|为)", r"(?:改|更正|修改|更改|纠正)(?:为|成)", r"请(?:输入|录入|填写|填入)\s*" + _VALUE,
           r"是不是", r"难道", r"而不是", r"笔误", r"(?:输入|录入)错误", r"是否应"],
}
# In every language: a question ending on a number (with its unit) offers that number as the answer.
LEADING_ANY = [r"\d[\d.,]*\s*(?:[A-Za-zµ%/°]{1,6}\s*)?[?？]"]

BLAMING = {
    "en": [r"\byou (?:forgot|failed|neglected|missed|did not|didn'?t|omitted)\b", r"\bcareless\w*",
           r"\bsloppy\b", r"\bnegligen\w*", r"\b(?:wrong|incorrect) again\b", r"\bagain wrong\b", r"\bobviously\b",
           r"\bclearly wrong\b", r"\bas usual\b", r"\bhow many times\b", r"\byour (?:mistake|error|fault)\b",
           r"\blazy\b"],
    "fr": [r"\bvous avez (?:oublié|omis|négligé)\b", r"\bnégligen\w*", r"\bmanque de (?:rigueur|soin)\b",
           r"\bencore une fois\b", r"\bde nouveau (?:faux|erroné)\b", r"\bencore faux\b", r"\bmanifestement\b",
           r"\bévidemment\b", r"\bvotre erreur\b", r"\berreur de votre part\b", r"\binattention\b", r"\bbâcl\w*"],
    "de": [r"\bvergessen\b", r"\bnachlässig\w*", r"\bschlampig\w*", r"\bunsorgfältig\w*", r"\bschon wieder\b",
           r"\bwieder falsch\b", r"\boffensichtlich\b", r"\boffenbar falsch\b", r"\bIhr(?:e)? (?:Fehler|Schuld)\b",
           r"\bwie so oft\b"],
    "es": [r"\bolvid\w*", r"\bdescuid\w*", r"\bnegligen\w*", r"\b(?:otra vez|de nuevo) (?:mal|incorrect\w*)",
           r"\bobviamente\b", r"\bevidentemente\b", r"\bsu (?:error|culpa)\b", r"\bcomo siempre\b"],
    "it": [r"\bdimentica\w*", r"\bnegligen\w*", r"\btrascurat\w*", r"\bdi nuovo (?:sbagliat|errat)\w*",
           r"\bancora una volta\b", r"\bovviamente\b", r"\bevidentemente\b", r"\b(?:vostro|suo) errore\b",
           r"\bcome al solito\b"],
    "pt": [r"\besquec\w*", r"\bdescuid\w*", r"\bneglig\w*", r"\b(?:outra vez|de novo) errad\w*", r"\bobviamente\b",
           r"\bevidentemente\b", r"\b(?:seu|vosso) erro\b", r"\berro (?:seu|vosso)\b", r"\bcomo sempre\b"],
    "nl": [r"\bvergeten\b", r"\bslordig\w*", r"\bnalatig\w*", r"\balweer\b", r"\b(?:weer|opnieuw) fout\b",
           r"\boverduidelijk\b", r"\bduidelijk fout\b", r"\b(?:uw|jullie) (?:fout|schuld)\b", r"\bzoals gewoonlijk\b"],
    "pl": [r"\bzapomni\w*", r"\bniedba\w*", r"\bznowu\b", r"\bponownie (?:błąd|źle|błędnie)\b", r"\boczywiście\b",
           r"\bewidentnie\b", r"\b(?:państwa|wasz|pana|pani) błąd\b", r"\bjak zwykle\b"],
    "ja": [r"忘れ", r"不注意", r"またしても", r"また(?:間違|誤)", r"明らかに", r"ずさん", r"いい加減"],
    "zh": [r"忘记", r"忘了", r"粗心", r"马虎", r"又(?:错|搞错)", r"再次(?:出错|错误)", r"显然", r"明显(?:错误|是错)",
           r"(?:你们|贵中心)的(?:错|失误|过失)", r"不认真", r"疏忽"],
}

_DATE = (r"(?:\d{4}[-/.年]\d{1,2}[-/.月]\d{1,2}日?|\d{1,2}[/.-]\d{1,2}[/.-]\d{2,4}"
         r"|\d{1,2}\.? [^\W\d]{3,12}\.?,? \d{4}|[^\W\d]{3,12} \d{1,2},? \d{4})")
_UPPER = "A-ZÀ-ÖØ-ÞĄĆĘŁŃŚŹŻ"
_LOWER = "a-zß-öø-ÿąćęłńóśźż"
# Checked before agents.llm.redaction's patterns (e-mail, English date of birth, MRN, SSN, phone,
# long digit runs), which this module reuses; a span reported here is not reported again there.
IDENTIFIERS = [
    ("date_of_birth", r"(?:date de naissance|née? le|Geburtsdatum|geb\.|geboren am|fecha de nacimiento|"
                      r"nacid[oa] el|data di nascita|nat[oa] il|data de nascimento|nascid[oa] em|geboortedatum|"
                      r"geboren op|data urodzenia|urodzon[ya]|ur\.|生年月日|出生日期|出生于)\s*[:：]?\s*" + _DATE),
    ("medical_record_number", r"(?:num[ée]ro de dossier|n° de dossier|IPP|Patientennummer|Fallnummer|"
                              r"n[úu]mero de historia(?: cl[íi]nica)?|NHC|numero di cartella|cartella clinica|"
                              r"n[úu]mero de processo|prontu[áa]rio|pati[ëe]ntnummer|ziekenhuisnummer|"
                              r"numer (?:historii choroby|karty)|カルテ番号|診察券番号|病历号|住院号)"
                              r"\s*[:#=：]?\s*[A-Z0-9][A-Z0-9-]{3,}"),
    ("nhs_number", r"\b\d{3}[ -]\d{3}[ -]\d{4}\b"),
    ("address", r"\b\d{1,5}[a-z]?,?\s+(?:(?-i:[A-Z])[\w'-]*\s+){1,3}(?:Street|St\.|Road|Rd\.|Avenue|Ave\.|Lane|"
                r"Boulevard|Blvd\.|Drive|Close|Way)\b"
                r"|\b\d{1,5}(?:\s?(?:bis|ter))?,?\s+(?:rue|avenue|boulevard|bd|place|chemin|allée|impasse|quai)\s+"
                r"(?:d[eu]s?\s+|de la\s+|l')?(?-i:[" + _UPPER + r"])"
                r"|\b[\wäöüß-]+(?:straße|strasse|str\.|gasse|platz|allee|straat|laan|plein|gracht|kade|singel)\s+"
                r"\d{1,4}[a-z]?\b"
                r"|\b(?:calle|c/|avda\.?|avenida|plaza|paseo|via|viale|piazza|corso|vicolo|rua|travessa|praça|largo|"
                r"ul\.|ulica|aleja|al\.|os\.)\s+(?-i:[" + _UPPER + r"])[\w' .-]{1,40}?,?\s+(?:n[º°o]\.?\s*)?\d{1,4}\b"
                r"|\d+丁目|\d+番地|[路街道巷]\d+号"),
    ("name", r"(?-i:\b(?:Mr|Mrs|Ms|Miss|Mme|Mlle|Herr|Frau|Sr|Sra|Srta|Sig|Sig\.ra|Dhr|Mevr)\.?)"
             r"\s+(?-i:[" + _UPPER + r"][" + _LOWER + r"]+)"
             r"|\b(?:pan|pani)\s+(?-i:[" + _UPPER + r"][" + _LOWER + r"]+)"
             r"|(?:patient(?:'s)? name|nom du patient|Name des Patienten|Patientenname|nombre del paciente|"
             r"nome del paziente|nome do paciente|naam van de patiënt|imię i nazwisko|患者(?:氏)?名|患者姓名)"
             r"\s*[:：]?\s*\S+"
             r"|[\u4e00-\u9fff]{2,3}(?<!者)(?:さん|様)|[\u4e00-\u9fff]{1,2}(?:女士|小姐)"),
    ("initials", r"(?:initials|initiales|Initialen|iniciales|iniziali|iniciais|inicjały|イニシャル|姓名缩写)"
                 r"\s*[:：]?\s*(?-i:[A-Z](?:[.\s-]{0,2}[A-Z]){1,2}\.?)(?!\w)"
                 r"|\b(?:patient|patiente|Patientin|subject|participant|paciente|paziente|deelnemer|pacjent(?:ka)?)"
                 r"\s+(?-i:[A-Z]\.\s?[A-Z]\.(?:\s?[A-Z]\.)?)"),
]
IDENTIFIER_WORDS = {
    "email": "e-mail address", "date_of_birth": "date of birth", "medical_record_number": "medical record number",
    "national_id": "national identity number", "phone": "phone number", "id_number": "identity or insurance number",
    "nhs_number": "NHS-like number", "address": "postal address", "name": "name", "initials": "initials",
    "mrn": "medical record number",
}
# Keys of context["identifiers"] and the kind of identifier each holds.
_CONTEXT_KINDS = {
    "subject_initials": "initials", "initials": "initials", "patient_name": "name", "subject_name": "name",
    "full_name": "name", "name": "name", "date_of_birth": "date_of_birth", "dob": "date_of_birth",
    "birth_date": "date_of_birth",
}


def _compiled(table: dict[str, list[str]]) -> dict[str, list[re.Pattern]]:
    return {lang: [re.compile(p, re.IGNORECASE) for p in patterns] for lang, patterns in table.items()}


_LEADING = _compiled(LEADING)
_LEADING_ANY = [re.compile(p) for p in LEADING_ANY]
_BLAMING = _compiled(BLAMING)
_IDENTIFIERS = [(kind, re.compile(p, re.IGNORECASE)) for kind, p in IDENTIFIERS]


def compliance_check(text: str, *, language: str, context: dict | None = None) -> list[str]:
    """The reasons `text` must not go to a site, in English; an empty list: compliant.

    `context` (optional) says what the query is about: "item" (label), "item_oid", "visit",
    and "identifiers", a dict of the patient's known direct identifiers (never stored)."""
    if not (text or "").strip():
        return ["empty text: a query must say what was found and ask the site to verify it"]
    language = (language or "").lower().replace("_", "-").split("-")[0]
    # NFKC: full-width forms (？, （, Ａ) read as their plain equivalents.
    plain = unicodedata.normalize("NFKC", text)
    context = context or {}
    reasons = _too_long(text, language)
    reasons += [f"suggests a value or an answer: '{s}'" for s in _matches(plain, _LEADING, language, _LEADING_ANY)]
    reasons += [f"blaming tone: '{s}'" for s in _matches(plain, _BLAMING, language)]
    reasons += [f"names the patient's {what}" for what in _identifiers(plain, context.get("identifiers") or {})]
    reasons += _missing_context(plain, context)
    return reasons


def compliance_max_length(language: str) -> int:
    return MAX_LENGTH.get(language, DEFAULT_MAX_LENGTH)


def _too_long(text: str, language: str) -> list[str]:
    limit = compliance_max_length(language)
    if len(text) <= limit:
        return []
    return [f"over {limit} characters ({len(text)}): a query asks one specific question; shorten it"]


def _matches(text: str, table: dict[str, list[re.Pattern]], language: str, extra=()) -> list[str]:
    languages = [language, "en"] if language in table else list(table)
    found = []
    for pattern in [p for lang in dict.fromkeys(languages) for p in table[lang]] + list(extra):
        for match in pattern.finditer(text):
            snippet = match.group(0).strip()[:60]
            if snippet and snippet not in found:
                found.append(snippet)
    return found


def _identifiers(text: str, known: dict) -> list[str]:
    """The kinds of direct identifier in `text`, each named once."""
    counts: Counter = Counter()
    for kind, pattern in _IDENTIFIERS:
        text, n = pattern.subn(" ", text)
        counts[kind] += n
    redact_text(text, _known_values(known), counts)  # the project's patterns, then the known values
    kinds = [_CONTEXT_KINDS.get(kind, kind) for kind, n in counts.items() if n]
    return list(dict.fromkeys(IDENTIFIER_WORDS.get(kind, kind.replace("_", " ")) for kind in kinds))


def _known_values(known: dict) -> list[tuple[str, str]]:
    """(kind, value) to look for: each value, each part of a name, each way of writing a date."""
    values = []
    for key, value in known.items():
        value = str(value or "").strip()
        if len(value) < 2:
            continue
        values.append((key, value))
        if _CONTEXT_KINDS.get(key) == "name":
            values += [(key, part) for part in re.split(r"[\s,]+", value) if len(part) >= 3 and part != value]
        if _CONTEXT_KINDS.get(key) == "date_of_birth" and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            y, m, d = value.split("-")
            values += [(key, f"{d}/{m}/{y}"), (key, f"{m}/{d}/{y}"), (key, f"{d}.{m}.{y}"), (key, f"{y}/{m}/{d}"),
                       (key, f"{d}-{m}-{y}"), (key, f"{int(y)}年{int(m)}月{int(d)}日")]
    return sorted(values, key=lambda item: -len(item[1]))  # longest first, as agents.llm.redaction does


def _normal(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def _missing_context(text: str, context: dict) -> list[str]:
    """The item must be named when the context knows it; a query about a visit (no item) must
    name the visit."""
    item, oid, visit = (str(context.get(k) or "").strip() for k in ("item", "item_oid", "visit"))
    plain = _normal(text)
    if item or oid:
        if not any(name and _normal(name) in plain for name in (item, oid)):
            return [f"no context: does not name the item/field ('{item or oid}')"]
    elif visit and _normal(visit) not in plain:
        return [f"no context: does not name the visit ('{visit}')"]
    return []
