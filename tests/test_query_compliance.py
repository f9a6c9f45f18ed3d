"""The compliance check of query texts: a table of good and bad texts in several languages, each
bad one refused for the reason it is bad, each good one accepted."""

import pytest

from queries.compliance import compliance_check

SBP = {"item": "Systolic BP", "item_oid": "VS.SYSBP", "visit": "Week 2"}
KNOWN = {**SBP, "identifiers": {"initials": "JS", "patient_name": "Jane Smithers", "date_of_birth": "1961-04-02"}}

GOOD = [
    ("en", "Systolic BP (Vital signs, Week 2): the recorded value 260 mmHg is outside the expected range "
           "(60–250 mmHg). Please verify against the source document and correct or confirm the data."),
    ("en", "Systolic BP at Week 2 is blank. Could you please check the source document and complete it, or confirm "
           "that it was not done?"),
    ("en", "Systolic BP, Week 2: is the value of 260 mmHg supported by the source document? Please correct or "
           "confirm."),
    ("fr", "« Systolic BP » (Signes vitaux, Week 2) : la valeur saisie, 260 mmHg, est en dehors de l'intervalle "
           "attendu (60–250 mmHg). Merci de vérifier par rapport au document source et de corriger ou confirmer."),
    ("fr", "Merci de vérifier la donnée Systolic BP de la visite Week 2 dans le dossier source du participant."),
    ("de", "„Systolic BP“ (Vitalzeichen, Week 2): Der eingetragene Wert 260 mmHg liegt außerhalb des erwarteten "
           "Bereichs (60–250 mmHg). Bitte prüfen Sie die Angabe anhand des Quelldokuments und korrigieren oder "
           "bestätigen Sie sie."),
    ("es", "«Systolic BP» (Constantes vitales, Week 2): el valor registrado, 260 mmHg, está fuera del rango "
           "esperado. Por favor, verifique el dato con el documento fuente y corríjalo o confírmelo."),
    ("it", "Il campo «Systolic BP» (Week 2) non è compilato. Si prega di completare il dato in base al documento "
           "sorgente o di confermare che non è disponibile."),
    ("pt", "“Systolic BP” (Week 2): o valor registrado, 260 mmHg, está fora do intervalo esperado. Por favor, "
           "verifique o dado no documento fonte e corrija-o ou confirme-o."),
    ("nl", "“Systolic BP” (Week 2): de ingevoerde waarde 260 mmHg valt buiten het verwachte bereik. Wilt u het "
           "gegeven controleren aan de hand van het brondocument en corrigeren of bevestigen?"),
    ("pl", "„Systolic BP” (Week 2): wprowadzona wartość 260 mmHg jest poza oczekiwanym zakresem. Prosimy o "
           "weryfikację z dokumentacją źródłową oraz poprawienie lub potwierdzenie danych."),
    ("ja", "Week 2・バイタルサインの「Systolic BP」の入力値（260 mmHg）が想定範囲（60–250 mmHg）外です。"
           "原資料と照合の上、データの修正または確認をお願いいたします。"),
    ("zh", "“Systolic BP”（生命体征，Week 2）：录入值 260 mmHg 超出预期范围（60–250 mmHg）。"
           "请对照原始资料核实，并更正或确认该数据。"),
]

BAD = [
    # leading: a suggested value or answer
    ("en", "Systolic BP at Week 2 should be 120. Please verify.", "suggests a value or an answer: 'should be'"),
    ("en", "Systolic BP at Week 2: please correct to 120.", "suggests a value or an answer: 'correct to 1"),
    ("en", "Systolic BP at Week 2: please change the value to 'Yes'.", "suggests a value or an answer"),
    ("en", "Systolic BP at Week 2 is blank; please enter 12.", "suggests a value or an answer: 'enter 1"),
    ("en", "Systolic BP at Week 2 is 260 mmHg. Is it 120?", "suggests a value or an answer: '120?'"),
    ("en", "Systolic BP at Week 2 looks like a typo, please check.", "suggests a value or an answer: 'typo'"),
    ("fr", "« Systolic BP » (Week 2) : la valeur devrait être 120.", "suggests a value or an answer: 'devrait être'"),
    ("fr", "« Systolic BP » (Week 2) : merci de corriger en 120.", "suggests a value or an answer: 'corriger en 1"),
    ("fr", "« Systolic BP » (Week 2) : s'agit-il de 120 ?", "suggests a value or an answer: '120 ?'"),
    ("de", "„Systolic BP“ (Week 2) sollte 120 mmHg sein.", "suggests a value or an answer: 'sollte 120 mmHg sein'"),
    ("de", "„Systolic BP“ (Week 2): Bitte auf 120 korrigieren.",
     "suggests a value or an answer: 'auf 120 korrigieren'"),
    ("de", "„Systolic BP“ (Week 2): Bitte 120 statt 260 eintragen.", "suggests a value or an answer"),
    ("es", "«Systolic BP» (Week 2): el valor debería ser 120.", "suggests a value or an answer: 'debería ser'"),
    ("es", "«Systolic BP» (Week 2): por favor, cambie a 120.", "suggests a value or an answer: 'cambie a 1"),
    ("es", "«Systolic BP» (Week 2): ¿es 120?", "suggests a value or an answer: '120?'"),
    ("it", "«Systolic BP» (Week 2): il valore dovrebbe essere 120.", "suggests a value or an answer"),
    ("pt", "“Systolic BP” (Week 2): favor corrigir para 120.", "suggests a value or an answer: 'corrigir para 1"),
    ("nl", "“Systolic BP” (Week 2): graag wijzigen in 120.", "suggests a value or an answer"),
    ("pl", "„Systolic BP” (Week 2): wartość powinna być 120.", "suggests a value or an answer: 'powinna być'"),
    ("pl", "„Systolic BP” (Week 2): prosimy zmienić na 120.", "suggests a value or an answer: 'zmienić na 1"),
    ("ja", "Week 2の「Systolic BP」は120であるべきです。", "suggests a value or an answer: 'であるべき'"),
    ("ja", "Week 2の「Systolic BP」を120に修正してください。", "suggests a value or an answer: 'に修正して'"),
    ("ja", "Week 2の「Systolic BP」は120ではありませんか？", "suggests a value or an answer"),
    ("zh", "“Systolic BP”（Week 2）应为120。", "suggests a value or an answer: '应为'"),
    ("zh", "“Systolic BP”（Week 2）：请改为120。", "suggests a value or an answer: '改为'"),
    ("zh", "“Systolic BP”（Week 2）是不是120？", "suggests a value or an answer"),
    # blaming tone
    ("en", "You forgot Systolic BP at Week 2 again. Please verify.", "blaming tone: 'You forgot'"),
    ("en", "Systolic BP at Week 2 is obviously wrong. Please verify.", "blaming tone: 'obviously'"),
    ("en", "Careless entry of Systolic BP at Week 2; please verify.", "blaming tone: 'Careless'"),
    ("en", "Systolic BP at Week 2 is wrong again. Please verify.", "blaming tone: 'wrong again'"),
    ("fr", "Vous avez oublié « Systolic BP » (Week 2).", "blaming tone: 'Vous avez oublié'"),
    ("fr", "« Systolic BP » (Week 2) est manifestement faux.", "blaming tone: 'manifestement'"),
    ("de", "Sie haben „Systolic BP“ (Week 2) schon wieder vergessen.", "blaming tone: 'vergessen'"),
    ("de", "„Systolic BP“ (Week 2) wurde nachlässig erfasst.", "blaming tone: 'nachlässig'"),
    ("es", "Se le olvidó «Systolic BP» (Week 2).", "blaming tone: 'olvidó'"),
    ("es", "«Systolic BP» (Week 2): obviamente es un error.", "blaming tone: 'obviamente'"),
    ("ja", "Week 2の「Systolic BP」の入力を忘れています。", "blaming tone: '忘れ'"),
    ("ja", "Week 2の「Systolic BP」は明らかに誤りです。", "blaming tone: '明らかに'"),
    ("zh", "“Systolic BP”（Week 2）：你们又忘记录入了。", "blaming tone: '忘记'"),
    ("zh", "“Systolic BP”（Week 2）：录入时太粗心。", "blaming tone: '粗心'"),
    # direct patient identifiers
    ("en", "Systolic BP at Week 2 for J.S.: initials JS, please verify.", "names the patient's initials"),
    ("en", "Systolic BP at Week 2, patient name: Jane Smithers.", "names the patient's name"),
    ("en", "Systolic BP at Week 2 (Mrs Smithers): please verify.", "names the patient's name"),
    ("en", "Systolic BP at Week 2, DOB 02/04/1961: please verify.", "names the patient's date of birth"),
    ("en", "Systolic BP at Week 2: patient born 1961-04-02, please verify.", "names the patient's date of birth"),
    ("en", "Systolic BP at Week 2: call +44 20 7946 0958 to verify.", "names the patient's phone number"),
    ("en", "Systolic BP at Week 2: mail jane.smithers@example.org.", "names the patient's e-mail address"),
    ("en", "Systolic BP at Week 2 for MRN 00123456: please verify.", "names the patient's medical record number"),
    ("en", "Systolic BP at Week 2 for NHS 943 476 5919: please verify.", "names the patient's NHS-like number"),
    ("en", "Systolic BP at Week 2: lives at 12 Baker Street.", "names the patient's postal address"),
    ("fr", "« Systolic BP » (Week 2) de Mme Dupont : merci de vérifier.", "names the patient's name"),
    ("fr", "« Systolic BP » (Week 2), date de naissance 02/04/1961.", "names the patient's date of birth"),
    ("fr", "« Systolic BP » (Week 2), patient domicilié 12 rue de la Paix.", "names the patient's postal address"),
    ("de", "„Systolic BP“ (Week 2), Geburtsdatum 02.04.1961.", "names the patient's date of birth"),
    ("de", "„Systolic BP“ (Week 2) von Herrn Müller, Hauptstraße 5.", "names the patient's postal address"),
    ("es", "«Systolic BP» (Week 2), fecha de nacimiento 02/04/1961.", "names the patient's date of birth"),
    ("es", "«Systolic BP» (Week 2): iniciales J.S., por favor verifique.", "names the patient's initials"),
    ("ja", "Week 2の「Systolic BP」：田中様（生年月日 1961年4月2日）。", "names the patient's date of birth"),
    ("ja", "Week 2の「Systolic BP」：田中さんの値をご確認ください。", "names the patient's name"),
    ("zh", "“Systolic BP”（Week 2）：出生日期 1961-04-02。", "names the patient's date of birth"),
    ("zh", "“Systolic BP”（Week 2）：患者姓名 张伟。", "names the patient's name"),
    # missing context
    ("en", "The value is outside the expected range. Please verify against source.",
     "no context: does not name the item/field ('Systolic BP')"),
    ("fr", "La valeur est hors limites. Merci de vérifier.", "no context: does not name the item/field"),
    ("ja", "値が範囲外です。原資料をご確認ください。", "no context: does not name the item/field"),
    # overlong
    ("en", "Systolic BP at Week 2: please verify. " + "Details follow. " * 40, "over 500 characters"),
    ("ja", "Week 2の「Systolic BP」をご確認ください。" + "詳細" * 130, "over 250 characters"),
]


@pytest.mark.parametrize(("language", "text"), GOOD)
def test_a_neutral_specific_text_is_compliant(language, text):
    assert compliance_check(text, language=language, context=SBP) == []


@pytest.mark.parametrize(("language", "text", "reason"), BAD)
def test_a_bad_text_is_refused_saying_why(language, text, reason):
    reasons = compliance_check(text, language=language, context=SBP)

    assert any(r.startswith(reason) for r in reasons), reasons


@pytest.mark.parametrize(("text", "what"), [
    ("Systolic BP at Week 2 for JS: please verify.", "initials"),
    ("Systolic BP at Week 2 (Smithers): please verify.", "name"),
    ("Systolic BP at Week 2 for jane smithers: please verify.", "name"),
    ("Systolic BP at Week 2, recorded 02/04/1961: please verify.", "date of birth"),
])
def test_an_identifier_the_context_knows_is_refused_in_any_form(text, what):
    assert f"names the patient's {what}" in compliance_check(text, language="en", context=KNOWN)


def test_the_pseudonymous_subject_id_and_study_dates_are_allowed():
    text = ("Subject 101-004, Systolic BP at Week 2 (2025-01-18, study day 18, -2/+2 days): the recorded value 260 "
            "mmHg is outside 60–250 mmHg. Please verify against the source document and correct or confirm.")
    assert compliance_check(text, language="en", context=KNOWN) == []


def test_a_query_about_a_visit_must_name_the_visit():
    context = {"visit": "Week 2"}
    assert compliance_check("The date of visit Week 2 is outside its window. Please verify.", language="en",
                            context=context) == []
    assert compliance_check("The visit date is outside its window. Please verify.", language="en",
                            context=context) == ["no context: does not name the visit ('Week 2')"]


def test_each_problem_is_reported_once_in_english_whatever_the_language():
    text = "Vous avez oublié « Systolic BP » (Week 2) : la valeur devrait être 120, Mme Dupont."
    reasons = compliance_check(text, language="fr", context=SBP)

    assert reasons == ["suggests a value or an answer: 'devrait être'", "blaming tone: 'Vous avez oublié'",
                       "names the patient's name"]


def test_an_empty_text_and_an_unknown_language_are_handled():
    assert compliance_check("  ", language="en")[0].startswith("empty text")
    # Unknown language: every language's patterns apply.
    assert compliance_check("Systolic BP (Week 2) sollte 120 sein.", language="sw", context=SBP) == [
        "suggests a value or an answer: 'sollte 120 sein'"]
