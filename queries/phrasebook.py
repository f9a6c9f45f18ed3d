"""Query texts per rule type and category, in the languages sites work in (DOMAIN.md, Queries).

Plain data, for translators to read and review: `str.format` templates, one sentence saying what
was found and where, then one closing sentence asking the site to verify against the source and
correct or confirm. Never a suggested value, never a question that hints at an answer, never
blame, no patient identifier (queries.compliance checks every rendered text).

Placeholders (queries.generator.query_text_render fills them; tests render every template in
every language, so a template naming a placeholder the renderer does not supply fails there):
  {item}      the item's label                {where}     form and visit ("Vital signs, Week 2")
  {observed}  the recorded value, with units  {expected}  the expected range, codes or rule
  {reference} the reference date of a date rule ("consent date: 2025-01-10")
  {window}    a date window ("0 to 30 days")  {keys}      the items that make two records the same
  {required}  the form or item a consistency rule requires
  {rule}      the study rule's name           {today}     the date the data were checked
  {visit} {visit_date} {day} {planned} {before} {after}   a visit outside its protocol window
  {prior}     the value recorded before the current one (only when known)

Rule templates are keyed by rule type (queries.models.EditCheck.RuleType), with a variant where
the rule's direction changes the sentence (date_order.after / .before, duplicate.record / .item).
Category templates (Query.Category) serve findings without a known rule type.
"""

# Which closing sentence each template ends with: the same in every language.
CLOSING_OF = {
    "required": "missing", "range": "verify", "codelist": "verify", "date_order.after": "dates",
    "date_order.before": "dates", "date_window": "dates", "visit_window": "verify", "future_date": "verify",
    "consistency": "verify", "lab_plausibility": "lab", "duplicate.record": "duplicate", "duplicate.item": "duplicate",
    "expression": "verify", "source_verification": "lab",
    "category.missing": "missing", "category.range": "verify", "category.inconsistency": "verify",
    "category.visit_protocol": "verify", "category.safety": "verify", "category.duplicate": "duplicate",
    "category.other": "verify",
}

PHRASEBOOK = {
    "en": {
        "name": "English",
        "templates": {
            "required": "{item} ({where}) is not completed.",
            "range": "{item} ({where}): the recorded value {observed} is outside the expected range ({expected}).",
            "codelist": "{item} ({where}): the recorded value “{observed}” is not one of the allowed values "
                        "({expected}).",
            "date_order.after": "{item} ({where}): the recorded date {observed} is earlier than the reference date "
                                "({reference}).",
            "date_order.before": "{item} ({where}): the recorded date {observed} is later than the reference date "
                                 "({reference}).",
            "date_window": "{item} ({where}): the recorded date {observed} is outside the allowed window ({window} "
                           "from the reference date, {reference}).",
            "visit_window": "The date of visit {visit} ({visit_date}) is study day {day}, outside the protocol window "
                            "(day {planned}, -{before}/+{after} days).",
            "future_date": "{item} ({where}): the recorded date {observed} is in the future (checked on {today}).",
            "consistency": "{item} ({where}) is recorded as “{observed}”, but the related data ({required}) are not "
                           "recorded.",
            "lab_plausibility": "{item} ({where}): the recorded value {observed} is outside physiologically plausible "
                                "limits ({expected}).",
            "duplicate.record": "{item} ({where}): this record appears to duplicate another record of the same "
                                "participant (same values for: {keys}).",
            "duplicate.item": "{item} ({where}) is recorded more than once at this visit (value: {observed}).",
            "expression": "{item} ({where}): the recorded values ({observed}) do not meet the study rule “{rule}”.",
            "source_verification": "{item} ({where}): the recorded value {observed} does not match the source document "
                                   "({expected}).",
            "category.missing": "{item} ({where}): no value is recorded.",
            "category.range": "{item} ({where}): the recorded value {observed} is outside the expected limits "
                              "({expected}).",
            "category.inconsistency": "{item} ({where}): the recorded data ({observed}) are inconsistent with related "
                                      "data ({expected}).",
            "category.visit_protocol": "{item} ({where}): the recorded data ({observed}) do not match the protocol "
                                       "schedule ({expected}).",
            "category.safety": "{item} ({where}): the recorded data ({observed}) are inconsistent with the related "
                               "safety data ({expected}).",
            "category.duplicate": "{item} ({where}): the recorded data ({observed}) appear to duplicate other data "
                                  "of the same participant.",
            "category.other": "{item} ({where}): the recorded data ({observed}) do not meet the check “{expected}”.",
        },
        "closings": {
            "verify": "Please verify against the source document and correct or confirm the data.",
            "missing": "Please complete it from the source document, or confirm that the data are not available.",
            "dates": "Please verify both dates against the source documents and correct or confirm them.",
            "duplicate": "Please verify against the source document and correct the data, or confirm that both "
                         "records are correct.",
            "lab": "Please verify the value and its unit against the source document (laboratory report) and "
                   "correct or confirm them.",
        },
        "prior": "Previously recorded value: {prior}.",
        "where": "{form}, {visit}",
        "anchors": {"consent": "consent date", "enrolment": "enrolment date", "visit": "date of visit {name}"},
        "reference": "{anchor}: {date}",
        "window": {"range": "{low} to {high} days", "min": "at least {low} days", "max": "at most {high} days"},
        "list_separator": ", ",
        "sentence_separator": " ",
    },
    "fr": {
        "name": "French",
        "templates": {
            "required": "La donnée « {item} » ({where}) n'est pas renseignée.",
            "range": "« {item} » ({where}) : la valeur saisie, {observed}, est en dehors de l'intervalle attendu "
                     "({expected}).",
            "codelist": "« {item} » ({where}) : la valeur saisie « {observed} » ne fait pas partie des valeurs "
                        "autorisées ({expected}).",
            "date_order.after": "« {item} » ({where}) : la date saisie, {observed}, est antérieure à la date de "
                                "référence ({reference}).",
            "date_order.before": "« {item} » ({where}) : la date saisie, {observed}, est postérieure à la date de "
                                 "référence ({reference}).",
            "date_window": "« {item} » ({where}) : la date saisie, {observed}, est en dehors de la fenêtre autorisée "
                           "({window} par rapport à la date de référence, {reference}).",
            "visit_window": "La date de la visite {visit} ({visit_date}) correspond au jour d'étude {day}, en dehors "
                            "de la fenêtre prévue par le protocole (jour {planned}, -{before}/+{after} jours).",
            "future_date": "« {item} » ({where}) : la date saisie, {observed}, est dans le futur (contrôle effectué "
                           "le {today}).",
            "consistency": "La donnée « {item} » ({where}) a pour valeur « {observed} », mais les données associées "
                           "({required}) ne sont pas saisies.",
            "lab_plausibility": "« {item} » ({where}) : la valeur saisie, {observed}, est en dehors des limites "
                                "physiologiquement plausibles ({expected}).",
            "duplicate.record": "« {item} » ({where}) : cet enregistrement semble faire doublon avec un autre "
                                "enregistrement du même participant (valeurs identiques pour : {keys}).",
            "duplicate.item": "La donnée « {item} » ({where}) est saisie plusieurs fois pour cette visite "
                              "(valeur : {observed}).",
            "expression": "« {item} » ({where}) : les valeurs saisies ({observed}) ne respectent pas la règle de "
                          "l'étude « {rule} ».",
            "source_verification": "« {item} » ({where}) : la valeur saisie, {observed}, ne correspond pas au document "
                                   "source ({expected}).",
            "category.missing": "« {item} » ({where}) : aucune valeur n'est saisie.",
            "category.range": "« {item} » ({where}) : la valeur saisie, {observed}, est en dehors des limites "
                              "attendues ({expected}).",
            "category.inconsistency": "« {item} » ({where}) : les données saisies ({observed}) ne concordent pas avec "
                                      "les données associées ({expected}).",
            "category.visit_protocol": "« {item} » ({where}) : les données saisies ({observed}) ne correspondent pas "
                                       "au calendrier du protocole ({expected}).",
            "category.safety": "« {item} » ({where}) : les données saisies ({observed}) ne concordent pas avec les "
                               "données de sécurité associées ({expected}).",
            "category.duplicate": "« {item} » ({where}) : les données saisies ({observed}) semblent faire doublon "
                                  "avec d'autres données du même participant.",
            "category.other": "« {item} » ({where}) : les données saisies ({observed}) ne respectent pas le contrôle "
                              "« {expected} ».",
        },
        "closings": {
            "verify": "Merci de vérifier par rapport au document source et de corriger ou confirmer la donnée.",
            "missing": "Merci de compléter cette donnée à partir du document source, ou de confirmer qu'elle n'est "
                       "pas disponible.",
            "dates": "Merci de vérifier les deux dates par rapport aux documents source et de les corriger ou de les "
                     "confirmer.",
            "duplicate": "Merci de vérifier par rapport au document source et de corriger les données, ou de "
                         "confirmer que les deux enregistrements sont corrects.",
            "lab": "Merci de vérifier la valeur et son unité par rapport au document source (compte rendu de "
                   "laboratoire) et de les corriger ou de les confirmer.",
        },
        "prior": "Valeur saisie précédemment : {prior}.",
        "where": "{form}, {visit}",
        "anchors": {"consent": "date de consentement", "enrolment": "date d'inclusion",
                    "visit": "date de la visite {name}"},
        "reference": "{anchor} : {date}",
        "window": {"range": "{low} à {high} jours", "min": "au moins {low} jours", "max": "au plus {high} jours"},
        "list_separator": ", ",
        "sentence_separator": " ",
    },
    "de": {
        "name": "German",
        "templates": {
            "required": "„{item}“ ({where}) ist nicht ausgefüllt.",
            "range": "„{item}“ ({where}): Der eingetragene Wert {observed} liegt außerhalb des erwarteten Bereichs "
                     "({expected}).",
            "codelist": "„{item}“ ({where}): Der eingetragene Wert „{observed}“ gehört nicht zu den zulässigen Werten "
                        "({expected}).",
            "date_order.after": "„{item}“ ({where}): Das eingetragene Datum {observed} liegt vor dem Referenzdatum "
                                "({reference}).",
            "date_order.before": "„{item}“ ({where}): Das eingetragene Datum {observed} liegt nach dem Referenzdatum "
                                 "({reference}).",
            "date_window": "„{item}“ ({where}): Das eingetragene Datum {observed} liegt außerhalb des zulässigen "
                           "Zeitfensters ({window} bezogen auf das Referenzdatum, {reference}).",
            "visit_window": "Das Datum der Visite {visit} ({visit_date}) entspricht Studientag {day} und liegt "
                            "außerhalb des Protokollfensters (Tag {planned}, -{before}/+{after} Tage).",
            "future_date": "„{item}“ ({where}): Das eingetragene Datum {observed} liegt in der Zukunft (Prüfung am "
                           "{today}).",
            "consistency": "„{item}“ ({where}) ist mit „{observed}“ angegeben, die zugehörigen Daten ({required}) "
                           "sind jedoch nicht erfasst.",
            "lab_plausibility": "„{item}“ ({where}): Der eingetragene Wert {observed} liegt außerhalb der "
                                "physiologisch plausiblen Grenzen ({expected}).",
            "duplicate.record": "„{item}“ ({where}): Dieser Datensatz scheint einen anderen Datensatz desselben "
                                "Teilnehmers zu duplizieren (gleiche Werte für: {keys}).",
            "duplicate.item": "„{item}“ ({where}) ist bei dieser Visite mehrfach erfasst (Wert: {observed}).",
            "expression": "„{item}“ ({where}): Die eingetragenen Werte ({observed}) erfüllen die Studienregel "
                          "„{rule}“ nicht.",
            "source_verification": "„{item}“ ({where}): Der eingetragene Wert {observed} stimmt nicht mit dem "
                                   "Quelldokument überein ({expected}).",
            "category.missing": "„{item}“ ({where}): Es ist kein Wert eingetragen.",
            "category.range": "„{item}“ ({where}): Der eingetragene Wert {observed} liegt außerhalb der erwarteten "
                              "Grenzen ({expected}).",
            "category.inconsistency": "„{item}“ ({where}): Die eingetragenen Daten ({observed}) stimmen nicht mit den "
                                      "zugehörigen Daten überein ({expected}).",
            "category.visit_protocol": "„{item}“ ({where}): Die eingetragenen Daten ({observed}) entsprechen nicht "
                                       "dem Visitenplan des Protokolls ({expected}).",
            "category.safety": "„{item}“ ({where}): Die eingetragenen Daten ({observed}) stimmen nicht mit den "
                               "zugehörigen Sicherheitsdaten überein ({expected}).",
            "category.duplicate": "„{item}“ ({where}): Die eingetragenen Daten ({observed}) scheinen andere Daten "
                                  "desselben Teilnehmers zu duplizieren.",
            "category.other": "„{item}“ ({where}): Die eingetragenen Daten ({observed}) erfüllen die Prüfung "
                              "„{expected}“ nicht.",
        },
        "closings": {
            "verify": "Bitte prüfen Sie die Angabe anhand des Quelldokuments und korrigieren oder bestätigen Sie sie.",
            "missing": "Bitte ergänzen Sie die Angabe anhand des Quelldokuments oder bestätigen Sie, dass sie nicht "
                       "verfügbar ist.",
            "dates": "Bitte prüfen Sie beide Datumsangaben anhand der Quelldokumente und korrigieren oder bestätigen "
                     "Sie sie.",
            "duplicate": "Bitte prüfen Sie die Angaben anhand des Quelldokuments und korrigieren Sie sie, oder "
                         "bestätigen Sie, dass beide Datensätze korrekt sind.",
            "lab": "Bitte prüfen Sie Wert und Einheit anhand des Quelldokuments (Laborbefund) und korrigieren oder "
                   "bestätigen Sie sie.",
        },
        "prior": "Zuvor eingetragener Wert: {prior}.",
        "where": "{form}, {visit}",
        "anchors": {"consent": "Datum der Einwilligung", "enrolment": "Datum des Studieneinschlusses",
                    "visit": "Datum der Visite {name}"},
        "reference": "{anchor}: {date}",
        "window": {"range": "{low} bis {high} Tage", "min": "mindestens {low} Tage", "max": "höchstens {high} Tage"},
        "list_separator": ", ",
        "sentence_separator": " ",
    },
    "es": {
        "name": "Spanish",
        "templates": {
            "required": "El campo «{item}» ({where}) no está cumplimentado.",
            "range": "«{item}» ({where}): el valor registrado, {observed}, está fuera del rango esperado "
                     "({expected}).",
            "codelist": "«{item}» ({where}): el valor registrado «{observed}» no es uno de los valores permitidos "
                        "({expected}).",
            "date_order.after": "«{item}» ({where}): la fecha registrada, {observed}, es anterior a la fecha de "
                                "referencia ({reference}).",
            "date_order.before": "«{item}» ({where}): la fecha registrada, {observed}, es posterior a la fecha de "
                                 "referencia ({reference}).",
            "date_window": "«{item}» ({where}): la fecha registrada, {observed}, está fuera de la ventana permitida "
                           "({window} respecto a la fecha de referencia, {reference}).",
            "visit_window": "La fecha de la visita {visit} ({visit_date}) corresponde al día de estudio {day}, fuera "
                            "de la ventana del protocolo (día {planned}, -{before}/+{after} días).",
            "future_date": "«{item}» ({where}): la fecha registrada, {observed}, es una fecha futura (comprobación "
                           "realizada el {today}).",
            "consistency": "El campo «{item}» ({where}) tiene el valor «{observed}», pero los datos relacionados "
                           "({required}) no están registrados.",
            "lab_plausibility": "«{item}» ({where}): el valor registrado, {observed}, está fuera de los límites "
                                "fisiológicamente plausibles ({expected}).",
            "duplicate.record": "«{item}» ({where}): este registro parece duplicar otro registro del mismo "
                                "participante (mismos valores en: {keys}).",
            "duplicate.item": "El campo «{item}» ({where}) está registrado más de una vez en esta visita "
                              "(valor: {observed}).",
            "expression": "«{item}» ({where}): los valores registrados ({observed}) no cumplen la regla del estudio "
                          "«{rule}».",
            "source_verification": "«{item}» ({where}): el valor registrado, {observed}, no coincide con el documento "
                                   "fuente ({expected}).",
            "category.missing": "«{item}» ({where}): no hay ningún valor registrado.",
            "category.range": "«{item}» ({where}): el valor registrado, {observed}, está fuera de los límites "
                              "esperados ({expected}).",
            "category.inconsistency": "«{item}» ({where}): los datos registrados ({observed}) no concuerdan con los "
                                      "datos relacionados ({expected}).",
            "category.visit_protocol": "«{item}» ({where}): los datos registrados ({observed}) no se ajustan al "
                                       "calendario del protocolo ({expected}).",
            "category.safety": "«{item}» ({where}): los datos registrados ({observed}) no concuerdan con los datos de "
                               "seguridad relacionados ({expected}).",
            "category.duplicate": "«{item}» ({where}): los datos registrados ({observed}) parecen duplicar otros "
                                  "datos del mismo participante.",
            "category.other": "«{item}» ({where}): los datos registrados ({observed}) no cumplen el control "
                              "«{expected}».",
        },
        "closings": {
            "verify": "Por favor, verifique el dato con el documento fuente y corríjalo o confírmelo.",
            "missing": "Por favor, complete el dato a partir del documento fuente o confirme que no está disponible.",
            "dates": "Por favor, verifique ambas fechas con los documentos fuente y corríjalas o confírmelas.",
            "duplicate": "Por favor, verifique los datos con el documento fuente y corríjalos, o confirme que ambos "
                         "registros son correctos.",
            "lab": "Por favor, verifique el valor y su unidad con el documento fuente (informe de laboratorio) y "
                   "corríjalos o confírmelos.",
        },
        "prior": "Valor registrado anteriormente: {prior}.",
        "where": "{form}, {visit}",
        "anchors": {"consent": "fecha del consentimiento", "enrolment": "fecha de inclusión",
                    "visit": "fecha de la visita {name}"},
        "reference": "{anchor}: {date}",
        "window": {"range": "{low} a {high} días", "min": "al menos {low} días", "max": "como máximo {high} días"},
        "list_separator": ", ",
        "sentence_separator": " ",
    },
    "it": {
        "name": "Italian",
        "templates": {
            "required": "Il campo «{item}» ({where}) non è compilato.",
            "range": "«{item}» ({where}): il valore registrato, {observed}, è al di fuori dell'intervallo previsto "
                     "({expected}).",
            "codelist": "«{item}» ({where}): il valore registrato «{observed}» non è tra i valori ammessi "
                        "({expected}).",
            "date_order.after": "«{item}» ({where}): la data registrata, {observed}, è precedente alla data di "
                                "riferimento ({reference}).",
            "date_order.before": "«{item}» ({where}): la data registrata, {observed}, è successiva alla data di "
                                 "riferimento ({reference}).",
            "date_window": "«{item}» ({where}): la data registrata, {observed}, è al di fuori della finestra "
                           "consentita ({window} rispetto alla data di riferimento, {reference}).",
            "visit_window": "La data della visita {visit} ({visit_date}) corrisponde al giorno di studio {day}, al di "
                            "fuori della finestra prevista dal protocollo (giorno {planned}, -{before}/+{after} "
                            "giorni).",
            "future_date": "«{item}» ({where}): la data registrata, {observed}, è nel futuro (controllo eseguito il "
                           "{today}).",
            "consistency": "Il campo «{item}» ({where}) riporta il valore «{observed}», ma i dati correlati "
                           "({required}) non sono registrati.",
            "lab_plausibility": "«{item}» ({where}): il valore registrato, {observed}, è al di fuori dei limiti "
                                "fisiologicamente plausibili ({expected}).",
            "duplicate.record": "«{item}» ({where}): questo record sembra duplicare un altro record dello stesso "
                                "partecipante (stessi valori per: {keys}).",
            "duplicate.item": "Il campo «{item}» ({where}) è registrato più di una volta in questa visita "
                              "(valore: {observed}).",
            "expression": "«{item}» ({where}): i valori registrati ({observed}) non rispettano la regola dello studio "
                          "«{rule}».",
            "source_verification": "«{item}» ({where}): il valore registrato, {observed}, non corrisponde al documento "
                                   "originale ({expected}).",
            "category.missing": "«{item}» ({where}): non è registrato alcun valore.",
            "category.range": "«{item}» ({where}): il valore registrato, {observed}, è al di fuori dei limiti previsti "
                              "({expected}).",
            "category.inconsistency": "«{item}» ({where}): i dati registrati ({observed}) non concordano con i dati "
                                      "correlati ({expected}).",
            "category.visit_protocol": "«{item}» ({where}): i dati registrati ({observed}) non corrispondono al "
                                       "calendario del protocollo ({expected}).",
            "category.safety": "«{item}» ({where}): i dati registrati ({observed}) non concordano con i dati di "
                               "sicurezza correlati ({expected}).",
            "category.duplicate": "«{item}» ({where}): i dati registrati ({observed}) sembrano duplicare altri dati "
                                  "dello stesso partecipante.",
            "category.other": "«{item}» ({where}): i dati registrati ({observed}) non rispettano il controllo "
                              "«{expected}».",
        },
        "closings": {
            "verify": "Si prega di verificare il dato rispetto al documento sorgente e di correggerlo o confermarlo.",
            "missing": "Si prega di completare il dato in base al documento sorgente o di confermare che non è "
                       "disponibile.",
            "dates": "Si prega di verificare entrambe le date rispetto ai documenti sorgente e di correggerle o "
                     "confermarle.",
            "duplicate": "Si prega di verificare i dati rispetto al documento sorgente e di correggerli, oppure di "
                         "confermare che entrambi i record sono corretti.",
            "lab": "Si prega di verificare il valore e la relativa unità di misura rispetto al documento sorgente "
                   "(referto di laboratorio) e di correggerli o confermarli.",
        },
        "prior": "Valore registrato in precedenza: {prior}.",
        "where": "{form}, {visit}",
        "anchors": {"consent": "data del consenso", "enrolment": "data di arruolamento",
                    "visit": "data della visita {name}"},
        "reference": "{anchor}: {date}",
        "window": {"range": "da {low} a {high} giorni", "min": "almeno {low} giorni",
                   "max": "al massimo {high} giorni"},
        "list_separator": ", ",
        "sentence_separator": " ",
    },
    "pt": {
        "name": "Portuguese",
        "templates": {
            "required": "O campo “{item}” ({where}) não está preenchido.",
            "range": "“{item}” ({where}): o valor registrado, {observed}, está fora do intervalo esperado "
                     "({expected}).",
            "codelist": "“{item}” ({where}): o valor registrado “{observed}” não está entre os valores permitidos "
                        "({expected}).",
            "date_order.after": "“{item}” ({where}): a data registrada, {observed}, é anterior à data de referência "
                                "({reference}).",
            "date_order.before": "“{item}” ({where}): a data registrada, {observed}, é posterior à data de referência "
                                 "({reference}).",
            "date_window": "“{item}” ({where}): a data registrada, {observed}, está fora da janela permitida "
                           "({window} em relação à data de referência, {reference}).",
            "visit_window": "A data da visita {visit} ({visit_date}) corresponde ao dia de estudo {day}, fora da "
                            "janela prevista no protocolo (dia {planned}, -{before}/+{after} dias).",
            "future_date": "“{item}” ({where}): a data registrada, {observed}, está no futuro (verificação realizada "
                           "em {today}).",
            "consistency": "O campo “{item}” ({where}) tem o valor “{observed}”, mas os dados relacionados "
                           "({required}) não estão registrados.",
            "lab_plausibility": "“{item}” ({where}): o valor registrado, {observed}, está fora dos limites "
                                "fisiologicamente plausíveis ({expected}).",
            "duplicate.record": "“{item}” ({where}): este registro parece duplicar outro registro do mesmo "
                                "participante (mesmos valores para: {keys}).",
            "duplicate.item": "O campo “{item}” ({where}) está registrado mais de uma vez nesta visita "
                              "(valor: {observed}).",
            "expression": "“{item}” ({where}): os valores registrados ({observed}) não cumprem a regra do estudo "
                          "“{rule}”.",
            "source_verification": "“{item}” ({where}): o valor registrado, {observed}, não corresponde ao documento "
                                   "fonte ({expected}).",
            "category.missing": "“{item}” ({where}): nenhum valor está registrado.",
            "category.range": "“{item}” ({where}): o valor registrado, {observed}, está fora dos limites esperados "
                              "({expected}).",
            "category.inconsistency": "“{item}” ({where}): os dados registrados ({observed}) não concordam com os "
                                      "dados relacionados ({expected}).",
            "category.visit_protocol": "“{item}” ({where}): os dados registrados ({observed}) não correspondem ao "
                                       "cronograma do protocolo ({expected}).",
            "category.safety": "“{item}” ({where}): os dados registrados ({observed}) não concordam com os dados de "
                               "segurança relacionados ({expected}).",
            "category.duplicate": "“{item}” ({where}): os dados registrados ({observed}) parecem duplicar outros "
                                  "dados do mesmo participante.",
            "category.other": "“{item}” ({where}): os dados registrados ({observed}) não cumprem a verificação "
                              "“{expected}”.",
        },
        "closings": {
            "verify": "Por favor, verifique o dado no documento fonte e corrija-o ou confirme-o.",
            "missing": "Por favor, preencha o dado a partir do documento fonte ou confirme que não está disponível.",
            "dates": "Por favor, verifique ambas as datas nos documentos fonte e corrija-as ou confirme-as.",
            "duplicate": "Por favor, verifique os dados no documento fonte e corrija-os, ou confirme que ambos os "
                         "registros estão corretos.",
            "lab": "Por favor, verifique o valor e a respectiva unidade no documento fonte (relatório do laboratório) "
                   "e corrija-os ou confirme-os.",
        },
        "prior": "Valor registrado anteriormente: {prior}.",
        "where": "{form}, {visit}",
        "anchors": {"consent": "data do consentimento", "enrolment": "data de inclusão",
                    "visit": "data da visita {name}"},
        "reference": "{anchor}: {date}",
        "window": {"range": "{low} a {high} dias", "min": "pelo menos {low} dias", "max": "no máximo {high} dias"},
        "list_separator": ", ",
        "sentence_separator": " ",
    },
    "nl": {
        "name": "Dutch",
        "templates": {
            "required": "“{item}” ({where}) is niet ingevuld.",
            "range": "“{item}” ({where}): de ingevoerde waarde {observed} valt buiten het verwachte bereik "
                     "({expected}).",
            "codelist": "“{item}” ({where}): de ingevoerde waarde “{observed}” is geen van de toegestane waarden "
                        "({expected}).",
            "date_order.after": "“{item}” ({where}): de ingevoerde datum {observed} ligt vóór de referentiedatum "
                                "({reference}).",
            "date_order.before": "“{item}” ({where}): de ingevoerde datum {observed} ligt na de referentiedatum "
                                 "({reference}).",
            "date_window": "“{item}” ({where}): de ingevoerde datum {observed} valt buiten het toegestane tijdvenster "
                           "({window} ten opzichte van de referentiedatum, {reference}).",
            "visit_window": "De datum van bezoek {visit} ({visit_date}) komt overeen met studiedag {day} en valt "
                            "buiten het venster van het protocol (dag {planned}, -{before}/+{after} dagen).",
            "future_date": "“{item}” ({where}): de ingevoerde datum {observed} ligt in de toekomst (gecontroleerd op "
                           "{today}).",
            "consistency": "“{item}” ({where}) is ingevuld als “{observed}”, maar de bijbehorende gegevens "
                           "({required}) zijn niet ingevoerd.",
            "lab_plausibility": "“{item}” ({where}): de ingevoerde waarde {observed} valt buiten de fysiologisch "
                                "plausibele grenzen ({expected}).",
            "duplicate.record": "“{item}” ({where}): dit record lijkt een ander record van dezelfde deelnemer te "
                                "dupliceren (dezelfde waarden voor: {keys}).",
            "duplicate.item": "“{item}” ({where}) is bij dit bezoek meer dan eens ingevoerd (waarde: {observed}).",
            "expression": "“{item}” ({where}): de ingevoerde waarden ({observed}) voldoen niet aan de studieregel "
                          "“{rule}”.",
            "source_verification": "“{item}” ({where}): de ingevoerde waarde {observed} komt niet overeen met het "
                                   "brondocument ({expected}).",
            "category.missing": "“{item}” ({where}): er is geen waarde ingevoerd.",
            "category.range": "“{item}” ({where}): de ingevoerde waarde {observed} valt buiten de verwachte grenzen "
                              "({expected}).",
            "category.inconsistency": "“{item}” ({where}): de ingevoerde gegevens ({observed}) komen niet overeen met "
                                      "de bijbehorende gegevens ({expected}).",
            "category.visit_protocol": "“{item}” ({where}): de ingevoerde gegevens ({observed}) komen niet overeen "
                                       "met het bezoekschema van het protocol ({expected}).",
            "category.safety": "“{item}” ({where}): de ingevoerde gegevens ({observed}) komen niet overeen met de "
                               "bijbehorende veiligheidsgegevens ({expected}).",
            "category.duplicate": "“{item}” ({where}): de ingevoerde gegevens ({observed}) lijken andere gegevens van "
                                  "dezelfde deelnemer te dupliceren.",
            "category.other": "“{item}” ({where}): de ingevoerde gegevens ({observed}) voldoen niet aan de controle "
                              "“{expected}”.",
        },
        "closings": {
            "verify": "Wilt u het gegeven controleren aan de hand van het brondocument en corrigeren of bevestigen?",
            "missing": "Wilt u het gegeven aanvullen vanuit het brondocument, of bevestigen dat het niet beschikbaar "
                       "is?",
            "dates": "Wilt u beide datums controleren aan de hand van de brondocumenten en corrigeren of bevestigen?",
            "duplicate": "Wilt u de gegevens controleren aan de hand van het brondocument en corrigeren, of "
                         "bevestigen dat beide records juist zijn?",
            "lab": "Wilt u de waarde en de eenheid controleren aan de hand van het brondocument "
                   "(laboratoriumuitslag) en corrigeren of bevestigen?",
        },
        "prior": "Eerder ingevoerde waarde: {prior}.",
        "where": "{form}, {visit}",
        "anchors": {"consent": "datum van toestemming", "enrolment": "datum van inclusie",
                    "visit": "datum van bezoek {name}"},
        "reference": "{anchor}: {date}",
        "window": {"range": "{low} tot {high} dagen", "min": "ten minste {low} dagen",
                   "max": "ten hoogste {high} dagen"},
        "list_separator": ", ",
        "sentence_separator": " ",
    },
    "pl": {
        "name": "Polish",
        "templates": {
            "required": "Pole „{item}” ({where}) nie zostało wypełnione.",
            "range": "„{item}” ({where}): wprowadzona wartość {observed} jest poza oczekiwanym zakresem "
                     "({expected}).",
            "codelist": "„{item}” ({where}): wprowadzona wartość „{observed}” nie należy do dopuszczalnych wartości "
                        "({expected}).",
            "date_order.after": "„{item}” ({where}): wprowadzona data {observed} jest wcześniejsza niż data "
                                "odniesienia ({reference}).",
            "date_order.before": "„{item}” ({where}): wprowadzona data {observed} jest późniejsza niż data "
                                 "odniesienia ({reference}).",
            "date_window": "„{item}” ({where}): wprowadzona data {observed} jest poza dopuszczalnym oknem czasowym "
                           "({window} względem daty odniesienia, {reference}).",
            "visit_window": "Data wizyty {visit} ({visit_date}) to dzień badania {day}, poza oknem określonym w "
                            "protokole (dzień {planned}, -{before}/+{after} dni).",
            "future_date": "„{item}” ({where}): wprowadzona data {observed} jest datą przyszłą (kontrola wykonana "
                           "{today}).",
            "consistency": "Pole „{item}” ({where}) ma wartość „{observed}”, ale powiązane dane ({required}) nie "
                           "zostały wprowadzone.",
            "lab_plausibility": "„{item}” ({where}): wprowadzona wartość {observed} jest poza zakresem wartości "
                                "fizjologicznie możliwych ({expected}).",
            "duplicate.record": "„{item}” ({where}): ten rekord wydaje się powielać inny rekord tego samego "
                                "uczestnika (te same wartości dla: {keys}).",
            "duplicate.item": "Pole „{item}” ({where}) zostało wprowadzone więcej niż raz podczas tej wizyty "
                              "(wartość: {observed}).",
            "expression": "„{item}” ({where}): wprowadzone wartości ({observed}) nie spełniają reguły badania "
                          "„{rule}”.",
            "source_verification": "„{item}” ({where}): wprowadzona wartość {observed} nie zgadza się z dokumentem "
                                   "źródłowym ({expected}).",
            "category.missing": "„{item}” ({where}): nie wprowadzono żadnej wartości.",
            "category.range": "„{item}” ({where}): wprowadzona wartość {observed} jest poza oczekiwanymi granicami "
                              "({expected}).",
            "category.inconsistency": "„{item}” ({where}): wprowadzone dane ({observed}) są niezgodne z powiązanymi "
                                      "danymi ({expected}).",
            "category.visit_protocol": "„{item}” ({where}): wprowadzone dane ({observed}) nie odpowiadają "
                                       "harmonogramowi protokołu ({expected}).",
            "category.safety": "„{item}” ({where}): wprowadzone dane ({observed}) są niezgodne z powiązanymi danymi "
                               "dotyczącymi bezpieczeństwa ({expected}).",
            "category.duplicate": "„{item}” ({where}): wprowadzone dane ({observed}) wydają się powielać inne dane "
                                  "tego samego uczestnika.",
            "category.other": "„{item}” ({where}): wprowadzone dane ({observed}) nie spełniają kontroli "
                              "„{expected}”.",
        },
        "closings": {
            "verify": "Prosimy o weryfikację z dokumentacją źródłową oraz poprawienie lub potwierdzenie danych.",
            "missing": "Prosimy o uzupełnienie danych na podstawie dokumentacji źródłowej lub potwierdzenie, że dane "
                       "są niedostępne.",
            "dates": "Prosimy o weryfikację obu dat z dokumentacją źródłową oraz ich poprawienie lub potwierdzenie.",
            "duplicate": "Prosimy o weryfikację z dokumentacją źródłową oraz poprawienie danych lub potwierdzenie, że "
                         "oba rekordy są prawidłowe.",
            "lab": "Prosimy o weryfikację wartości i jednostki z dokumentacją źródłową (wynikiem badania "
                   "laboratoryjnego) oraz ich poprawienie lub potwierdzenie.",
        },
        "prior": "Poprzednio wprowadzona wartość: {prior}.",
        "where": "{form}, {visit}",
        "anchors": {"consent": "data wyrażenia zgody", "enrolment": "data włączenia do badania",
                    "visit": "data wizyty {name}"},
        "reference": "{anchor}: {date}",
        "window": {"range": "od {low} do {high} dni", "min": "co najmniej {low} dni", "max": "najwyżej {high} dni"},
        "list_separator": ", ",
        "sentence_separator": " ",
    },
    "ja": {
        "name": "Japanese",
        "templates": {
            "required": "{where}の「{item}」が未入力です。",
            "range": "{where}の「{item}」の入力値（{observed}）が想定範囲（{expected}）外です。",
            "codelist": "{where}の「{item}」の入力値「{observed}」は許容される値（{expected}）に含まれていません。",
            "date_order.after": "{where}の「{item}」の入力日（{observed}"
                                "）が基準日（{reference}）より前になっています。",
            "date_order.before": "{where}の「{item}」の入力日（{observed}"
                                 "）が基準日（{reference}）より後になっています。",
            "date_window": "{where}の「{item}」の入力日（{observed}）が、"
                           "基準日（{reference}）に対する許容期間（{window}）"
                           "外です。",
            "visit_window": "来院「{visit}」の来院日（{visit_date}）"
                            "は試験{day}日目に当たり、プロトコルで規定された許容範囲"
                            "（{planned}日目、-{before}/+{after}日）外です。",
            "future_date": "{where}の「{item}」の入力日（{observed}）が未来の日付になっています（確認日：{today}）。",
            "consistency": "{where}の「{item}」が「{observed}」と入力"
                           "されていますが、関連するデータ（{required}）が入力されて"
                           "いません。",
            "lab_plausibility": "{where}の「{item}」の入力値（{observed}）が生理学的に妥当な範囲（{expected}）外です。",
            "duplicate.record": "{where}の「{item}」：同一被験者の別のレコー"
                                "ドと重複している可能性があります（{keys}が同一）。",
            "duplicate.item": "{where}の「{item}」が同一来院で複数回入力されています（値：{observed}）。",
            "expression": "{where}の「{item}」の入力値（{observed}）が試験のルール「{rule}」を満たしていません。",
            "source_verification": "{where}の「{item}」の入力値{observed}が原資料（{expected}）と一致しません。",
            "category.missing": "{where}の「{item}」に値が入力されていません。",
            "category.range": "{where}の「{item}」の入力値（{observed}）が想定される範囲（{expected}）外です。",
            "category.inconsistency": "{where}の「{item}」の入力データ（{observed}"
                                      "）が関連データ（{expected}）と一致しません。",
            "category.visit_protocol": "{where}の「{item}」の入力データ（{observed}）がプロトコルの来院スケジュール"
                                       "（{expected}）と一致しません。",
            "category.safety": "{where}の「{item}」の入力データ（{observed}"
                               "）が関連する安全性データ（{expected}）と一致しません。",
            "category.duplicate": "{where}の「{item}」の入力データ（{observed}"
                                  "）が同一被験者の他のデータと重複している可能性が"
                                  "あります。",
            "category.other": "{where}の「{item}」の入力データ（{observed}"
                              "）がチェック「{expected}」を満たしていません。",
        },
        "closings": {
            "verify": "原資料と照合の上、データの修正または確認をお願いいたします。",
            "missing": "原資料をご確認の上、ご入力いただくか、データが得られない場合はその旨をご確認ください。",
            "dates": "両方の日付を原資料と照合の上、修正または確認をお願いいたします。",
            "duplicate": "原資料と照合の上、データを修正いただくか、両方のレコードが正しいことをご確認ください。",
            "lab": "値および単位を原資料（臨床検査報告書）と照合の上、修正または確認をお願いいたします。",
        },
        "prior": "前回の入力値：{prior}。",
        "where": "{visit}・{form}",
        "anchors": {"consent": "同意取得日", "enrolment": "登録日", "visit": "来院「{name}」の日付"},
        "reference": "{anchor}：{date}",
        "window": {"range": "{low}～{high}日", "min": "{low}日以上", "max": "{high}日以内"},
        "list_separator": "、",
        "sentence_separator": "",
    },
    "zh": {
        "name": "Chinese (Simplified)",
        "templates": {
            "required": "“{item}”（{where}）未填写。",
            "range": "“{item}”（{where}）：录入值 {observed} 超出预期范围（{expected}）。",
            "codelist": "“{item}”（{where}）：录入值“{observed}”不在允许的取值（{expected}）之列。",
            "date_order.after": "“{item}”（{where}）：录入日期 {observed} 早于参考日期（{reference}）。",
            "date_order.before": "“{item}”（{where}）：录入日期 {observed} 晚于参考日期（{reference}）。",
            "date_window": "“{item}”（{where}）：录入日期 {observed} 超出相对于参考日期（{reference}）的允许时间窗"
                           "（{window}）。",
            "visit_window": "访视“{visit}”的日期（{visit_date}）为研究第 {day}"
                            " 天，超出方案规定的访视窗（第 {planned} 天，"
                            "-{before}/+{after} 天）。",
            "future_date": "“{item}”（{where}）：录入日期 {observed} 为未来日期（核查日期：{today}）。",
            "consistency": "“{item}”（{where}）的录入值为“{observed}”，但相关数据（{required}）未录入。",
            "lab_plausibility": "“{item}”（{where}）：录入值 {observed} 超出生理上可能的范围（{expected}）。",
            "duplicate.record": "“{item}”（{where}）：该记录似乎与同一受试者的另一条记录重复（以下字段相同：{keys}）。",
            "duplicate.item": "“{item}”（{where}）在本次访视中录入了多次（值：{observed}）。",
            "expression": "“{item}”（{where}）：录入值（{observed}）不符合研究规则“{rule}”。",
            "source_verification": "“{item}”（{where}）：录入值{observed}与原始资料（{expected}）不一致。",
            "category.missing": "“{item}”（{where}）：未录入任何值。",
            "category.range": "“{item}”（{where}）：录入值 {observed} 超出预期界限（{expected}）。",
            "category.inconsistency": "“{item}”（{where}）：录入数据（{observed}）与相关数据（{expected}）不一致。",
            "category.visit_protocol": "“{item}”（{where}）：录入数据（{observed}"
                                       "）与方案规定的访视计划（{expected}）不符。",
            "category.safety": "“{item}”（{where}）：录入数据（{observed}）与相关安全性数据（{expected}）不一致。",
            "category.duplicate": "“{item}”（{where}）：录入数据（{observed}）似乎与同一受试者的其他数据重复。",
            "category.other": "“{item}”（{where}）：录入数据（{observed}）不符合核查“{expected}”。",
        },
        "closings": {
            "verify": "请对照原始资料核实，并更正或确认该数据。",
            "missing": "请根据原始资料补充录入，或确认该数据无法获得。",
            "dates": "请对照原始资料核实这两个日期，并更正或确认。",
            "duplicate": "请对照原始资料核实，并更正数据或确认两条记录均正确。",
            "lab": "请对照原始资料（实验室检查报告）核实该数值及其单位，并更正或确认。",
        },
        "prior": "此前录入值：{prior}。",
        "where": "{form}，{visit}",
        "anchors": {"consent": "知情同意日期", "enrolment": "入组日期", "visit": "访视“{name}”日期"},
        "reference": "{anchor}：{date}",
        "window": {"range": "{low}至{high}天", "min": "至少{low}天", "max": "最多{high}天"},
        "list_separator": "、",
        "sentence_separator": "",
    },
}

DEFAULT_LANGUAGE = "en"
LANGUAGES = tuple(PHRASEBOOK)  # also the languages of the e-mail templates (templates/queries/email/<language>/)


def phrasebook_language(language: str | None) -> str:
    """The phrasebook language for an ISO 639-1 code ("fr", "fr-CA", "PT_br"); English otherwise."""
    code = (language or "").strip().lower().replace("_", "-").split("-")[0]
    return code if code in PHRASEBOOK else DEFAULT_LANGUAGE
