"""Letters to a site about a monitoring visit, as PDF (reportlab), in the site's language: the
confirmation letter (when, who, what to have ready) and the follow-up letter (summary, findings and
action items of the visit report, SDV progress, the next visit). The same ten languages as the
query texts (queries/phrasebook.py): en, fr, de, es, it, pt, nl, pl, ja, zh. Latin scripts are set in
DejaVu Sans (shipped in sdv/monitoring/fonts, Bitstream Vera licence), Japanese and Chinese in
reportlab's built-in Adobe CID fonts. What the CRA wrote (summary, findings, actions) is printed as
written; everything else is translated here, as plain data for translators to review."""

import datetime
import io
import re
from pathlib import Path
from xml.sax.saxutils import escape

from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.cidfonts import UnicodeCIDFont
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer

FONTS = Path(__file__).parent / "fonts"
LETTERS = ("confirmation", "follow-up")

TEXT = {
    "en": {"confirmation": "Confirmation of monitoring visit", "follow-up": "Follow-up letter of monitoring visit",
           "study": "Study", "site": "Site", "date": "Date", "monitor": "Monitor", "kind_on_site": "on-site visit",
           "kind_remote": "remote visit (video or telephone)", "days": "Days on site",
           "confirm_body": "We confirm the {kind} of the study at your site on {date}.",
           "prepare": "Please have ready: the investigator site file, the source documents of the participants "
                      "selected for source data verification ({to_verify} data points still to verify), and access "
                      "to the EDC for the monitor.",
           "tier": "Risk tier of the site: {tier}.", "low": "low", "medium": "medium", "high": "high",
           "thanks": "Thank you for receiving the {kind} on {date}.", "summary": "Summary", "findings": "Findings",
           "actions": "Action items", "none": "None recorded.",
           "sdv": "Source data verification: {verified} of {selected} selected data points verified ({percent}), "
                  "{discrepancy} discrepancies.", "next": "Next visit: {next}.", "to_plan": "to be planned",
           "regards": "Kind regards"},
    "fr": {"confirmation": "Confirmation de visite de monitoring",
           "follow-up": "Lettre de suivi de visite de monitoring",
           "study": "Étude", "site": "Centre", "date": "Date", "monitor": "Moniteur (ARC)",
           "kind_on_site": "visite sur site", "kind_remote": "visite à distance (vidéo ou téléphone)",
           "days": "Jours sur site",
           "confirm_body": "Nous confirmons la {kind} de l’étude dans votre centre le {date}.",
           "prepare": "Merci de tenir à disposition : le classeur investigateur, les documents source des "
                      "participants sélectionnés pour la vérification des données source ({to_verify} données "
                      "encore à vérifier) et un accès à l’EDC pour le moniteur.",
           "tier": "Niveau de risque du centre : {tier}.", "low": "faible", "medium": "moyen", "high": "élevé",
           "thanks": "Merci de nous avoir reçus pour la {kind} du {date}.", "summary": "Résumé",
           "findings": "Constats", "actions": "Actions à mener", "none": "Aucun.",
           "sdv": "Vérification des données source : {verified} sur {selected} données sélectionnées vérifiées "
                  "({percent}), {discrepancy} écarts.", "next": "Prochaine visite : {next}.", "to_plan": "à planifier",
           "regards": "Cordialement"},
    "de": {"confirmation": "Bestätigung des Monitoringbesuchs", "follow-up": "Nachbereitungsschreiben zum "
                                                                              "Monitoringbesuch",
           "study": "Studie", "site": "Prüfzentrum", "date": "Datum", "monitor": "Monitor (CRA)",
           "kind_on_site": "Vor-Ort-Besuch", "kind_remote": "Remote-Besuch (Video oder Telefon)",
           "days": "Tage vor Ort", "confirm_body": "Wir bestätigen den {kind} der Studie in Ihrem Zentrum am {date}.",
           "prepare": "Bitte halten Sie bereit: den Prüferordner, die Quelldokumente der für die "
                      "Quelldatenverifizierung ausgewählten Teilnehmer (noch {to_verify} Datenpunkte zu prüfen) und "
                      "einen EDC-Zugang für den Monitor.",
           "tier": "Risikostufe des Zentrums: {tier}.", "low": "niedrig", "medium": "mittel", "high": "hoch",
           "thanks": "Vielen Dank für den {kind} am {date}.", "summary": "Zusammenfassung",
           "findings": "Feststellungen",
           "actions": "Maßnahmen", "none": "Keine.",
           "sdv": "Quelldatenverifizierung: {verified} von {selected} ausgewählten Datenpunkten verifiziert "
                  "({percent}), {discrepancy} Abweichungen.", "next": "Nächster Besuch: {next}.",
           "to_plan": "wird geplant", "regards": "Mit freundlichen Grüßen"},
    "es": {"confirmation": "Confirmación de visita de monitorización",
           "follow-up": "Carta de seguimiento de visita de monitorización", "study": "Estudio", "site": "Centro",
           "date": "Fecha", "monitor": "Monitor (CRA)", "kind_on_site": "visita presencial",
           "kind_remote": "visita remota (vídeo o teléfono)", "days": "Días en el centro",
           "confirm_body": "Confirmamos la {kind} del estudio en su centro el {date}.",
           "prepare": "Por favor, tengan preparados: el archivo del investigador, los documentos fuente de los "
                      "participantes seleccionados para la verificación de datos fuente ({to_verify} datos pendientes "
                      "de verificar) y acceso al EDC para el monitor.",
           "tier": "Nivel de riesgo del centro: {tier}.", "low": "bajo", "medium": "medio", "high": "alto",
           "thanks": "Gracias por recibir la {kind} del {date}.", "summary": "Resumen", "findings": "Hallazgos",
           "actions": "Acciones", "none": "Ninguno.",
           "sdv": "Verificación de datos fuente: {verified} de {selected} datos seleccionados verificados ({percent}),"
                  " {discrepancy} discrepancias.", "next": "Próxima visita: {next}.", "to_plan": "por planificar",
           "regards": "Atentamente"},
    "it": {"confirmation": "Conferma della visita di monitoraggio",
           "follow-up": "Lettera di follow-up della visita di monitoraggio", "study": "Studio", "site": "Centro",
           "date": "Data", "monitor": "Monitor (CRA)", "kind_on_site": "visita in sede",
           "kind_remote": "visita da remoto (video o telefono)", "days": "Giorni in sede",
           "confirm_body": "Confermiamo la {kind} dello studio presso il vostro centro il {date}.",
           "prepare": "Vi preghiamo di tenere a disposizione: il fascicolo dello sperimentatore, i documenti sorgente "
                      "dei partecipanti selezionati per la verifica dei dati sorgente ({to_verify} dati ancora da "
                      "verificare) e un accesso all’EDC per il monitor.",
           "tier": "Livello di rischio del centro: {tier}.", "low": "basso", "medium": "medio", "high": "alto",
           "thanks": "Grazie per aver accolto la {kind} del {date}.", "summary": "Sintesi", "findings": "Rilievi",
           "actions": "Azioni", "none": "Nessuno.",
           "sdv": "Verifica dei dati sorgente: {verified} su {selected} dati selezionati verificati ({percent}), "
                  "{discrepancy} discrepanze.", "next": "Prossima visita: {next}.", "to_plan": "da pianificare",
           "regards": "Cordiali saluti"},
    "pt": {"confirmation": "Confirmação de visita de monitorização",
           "follow-up": "Carta de seguimento de visita de monitorização", "study": "Estudo", "site": "Centro",
           "date": "Data", "monitor": "Monitor (CRA)", "kind_on_site": "visita presencial",
           "kind_remote": "visita remota (vídeo ou telefone)", "days": "Dias no centro",
           "confirm_body": "Confirmamos a {kind} do estudo no seu centro em {date}.",
           "prepare": "Por favor, tenham preparados: o dossiê do investigador, os documentos fonte dos participantes "
                      "selecionados para a verificação de dados fonte ({to_verify} dados ainda por verificar) e "
                      "acesso ao EDC para o monitor.",
           "tier": "Nível de risco do centro: {tier}.", "low": "baixo", "medium": "médio", "high": "alto",
           "thanks": "Obrigado por receberem a {kind} de {date}.", "summary": "Resumo", "findings": "Constatações",
           "actions": "Ações", "none": "Nenhum.",
           "sdv": "Verificação de dados fonte: {verified} de {selected} dados selecionados verificados ({percent}), "
                  "{discrepancy} discrepâncias.", "next": "Próxima visita: {next}.", "to_plan": "a planear",
           "regards": "Com os melhores cumprimentos"},
    "nl": {"confirmation": "Bevestiging van monitoringbezoek", "follow-up": "Vervolgbrief monitoringbezoek",
           "study": "Studie", "site": "Centrum", "date": "Datum", "monitor": "Monitor (CRA)",
           "kind_on_site": "bezoek ter plaatse", "kind_remote": "bezoek op afstand (video of telefoon)",
           "days": "Dagen ter plaatse", "confirm_body": "Wij bevestigen het {kind} van de studie in uw centrum op "
                                                        "{date}.",
           "prepare": "Wilt u klaarleggen: het onderzoekersdossier, de brondocumenten van de deelnemers die zijn "
                      "geselecteerd voor brondataverificatie (nog {to_verify} gegevens te verifiëren) en toegang tot "
                      "het EDC voor de monitor.",
           "tier": "Risiconiveau van het centrum: {tier}.", "low": "laag", "medium": "middel", "high": "hoog",
           "thanks": "Dank u voor het ontvangen van het {kind} op {date}.", "summary": "Samenvatting",
           "findings": "Bevindingen", "actions": "Acties", "none": "Geen.",
           "sdv": "Brondataverificatie: {verified} van {selected} geselecteerde gegevens geverifieerd ({percent}), "
                  "{discrepancy} afwijkingen.", "next": "Volgend bezoek: {next}.", "to_plan": "nog te plannen",
           "regards": "Met vriendelijke groet"},
    "pl": {"confirmation": "Potwierdzenie wizyty monitorującej", "follow-up": "Pismo podsumowujące wizytę "
                                                                             "monitorującą",
           "study": "Badanie", "site": "Ośrodek", "date": "Data", "monitor": "Monitor (CRA)",
           "kind_on_site": "wizytę w ośrodku", "kind_remote": "wizytę zdalną (wideo lub telefon)",
           "days": "Dni w ośrodku", "confirm_body": "Potwierdzamy {kind} w ramach badania w Państwa ośrodku w dniu "
                                                    "{date}.",
           "prepare": "Prosimy o przygotowanie: dokumentacji badacza, dokumentów źródłowych uczestników wybranych do "
                      "weryfikacji danych źródłowych (pozostało {to_verify} danych do weryfikacji) oraz dostępu do "
                      "EDC dla monitora.",
           "tier": "Poziom ryzyka ośrodka: {tier}.", "low": "niski", "medium": "średni", "high": "wysoki",
           "thanks": "Dziękujemy za przyjęcie nas na {kind} w dniu {date}.", "summary": "Podsumowanie",
           "findings": "Ustalenia", "actions": "Działania", "none": "Brak.",
           "sdv": "Weryfikacja danych źródłowych: zweryfikowano {verified} z {selected} wybranych danych ({percent}),"
                  " {discrepancy} rozbieżności.", "next": "Następna wizyta: {next}.", "to_plan": "do zaplanowania",
           "regards": "Z poważaniem"},
    "ja": {"confirmation": "モニタリング訪問のご確認", "follow-up": "モニタリング訪問のフォローアップ",
           "study": "試験", "site": "実施医療機関", "date": "日付", "monitor": "モニター（CRA）",
           "kind_on_site": "訪問モニタリング", "kind_remote": "リモートモニタリング（ビデオまたは電話）",
           "days": "訪問日数", "confirm_body": "{date}に貴施設にて本試験の{kind}を実施いたしますことをご確認ください。",
           "prepare": "治験責任医師ファイル、原資料の照合に選ばれた被験者の原資料（未照合のデータ{to_verify}件）、"
                      "およびモニター用のEDCへのアクセスをご準備ください。",
           "tier": "施設のリスク区分：{tier}。", "low": "低", "medium": "中", "high": "高",
           "thanks": "{date}の{kind}にご対応いただき、ありがとうございました。", "summary": "概要",
           "findings": "所見", "actions": "対応事項", "none": "なし。",
           "sdv": "原資料の照合：選択されたデータ{selected}件中{verified}件を照合済み"
                  "（{percent}）、不一致{discrepancy}件。",
           "next": "次回訪問：{next}。", "to_plan": "調整中", "regards": "よろしくお願いいたします"},
    "zh": {"confirmation": "监查访视确认函", "follow-up": "监查访视跟进函", "study": "研究", "site": "研究中心",
           "date": "日期", "monitor": "监查员（CRA）", "kind_on_site": "现场监查访视",
           "kind_remote": "远程监查访视（视频或电话）", "days": "现场天数",
           "confirm_body": "我们确认将于{date}在贵中心进行本研究的{kind}。",
           "prepare": "请准备：研究者文件夹、被选中进行源数据核查的受试者的源文件（尚有{to_verify}个数据点待核查），"
                      "以及供监查员使用的EDC访问权限。",
           "tier": "中心风险等级：{tier}。", "low": "低", "medium": "中", "high": "高",
           "thanks": "感谢贵中心接待{date}的{kind}。", "summary": "总结", "findings": "发现", "actions": "待办事项",
           "none": "无。",
           "sdv": "源数据核查：已核查{selected}个选定数据点中的{verified}个"
                  "（{percent}），差异{discrepancy}个。",
           "next": "下次访视：{next}。", "to_plan": "待安排", "regards": "此致敬礼"},
}
LANGUAGES = tuple(TEXT)
CID_FONTS = {"ja": "HeiseiKakuGo-W5", "zh": "STSong-Light"}


def _font(language: str) -> tuple[str, str]:
    """(regular, bold) font names for the language, registered on first use."""
    if language in CID_FONTS:
        name = CID_FONTS[language]
        if name not in pdfmetrics.getRegisteredFontNames():
            pdfmetrics.registerFont(UnicodeCIDFont(name))
        return name, name
    if "DejaVuSans" not in pdfmetrics.getRegisteredFontNames():
        pdfmetrics.registerFont(TTFont("DejaVuSans", str(FONTS / "DejaVuSans.ttf")))
        pdfmetrics.registerFont(TTFont("DejaVuSans-Bold", str(FONTS / "DejaVuSans-Bold.ttf")))
    return "DejaVuSans", "DejaVuSans-Bold"


def letter_pdf(visit, letter: str, *, language: str, report=None, next_visit=None) -> bytes:
    """The letter as PDF bytes; a language without texts falls back to English."""
    from sdv.monitoring.selectors import sdv_progress

    language = language if language in TEXT else "en"
    t = TEXT[language]
    regular, bold = _font(language)
    styles = {"title": ParagraphStyle("title", fontName=bold, fontSize=15, leading=20, spaceAfter=8),
              "h": ParagraphStyle("h", fontName=bold, fontSize=11, leading=15, spaceBefore=8),
              "p": ParagraphStyle("p", fontName=regular, fontSize=10.5, leading=15, spaceAfter=4,
                                  wordWrap="CJK" if language in CID_FONTS else None)}
    site, study = visit.site, visit.study
    kind = t["kind_on_site"] if visit.kind == "on_site" else t["kind_remote"]
    date = visit.date.isoformat()
    story = [Paragraph(escape(t[letter]), styles["title"])]
    facts = [(t["study"], f"{study.protocol_id}: {study.name}"), (t["site"], f"{site.number} {site.name}, {site.city}"),
             (t["date"], date), (t["monitor"], visit.monitor.name)]
    if visit.kind == "on_site":
        facts.append((t["days"], str(visit.days)))
    for label, value in facts:
        story.append(Paragraph(f"<b>{escape(label)}:</b> {escape(value)}", styles["p"]))
    story.append(Spacer(1, 6 * mm))
    sdv = sdv_progress(site=site)
    if letter == "confirmation":
        story.append(Paragraph(escape(t["confirm_body"].format(kind=kind, date=date)), styles["p"]))
        story.append(Paragraph(escape(t["prepare"].format(to_verify=sdv["to_verify"])), styles["p"]))
        tier = re.search(r"\b(low|medium|high) risk\b", visit.reason or "")
        if tier:
            story.append(Paragraph(escape(t["tier"].format(tier=t[tier.group(1)])), styles["p"]))
    else:
        story.append(Paragraph(escape(t["thanks"].format(kind=kind, date=date)), styles["p"]))
        for key in ("summary", "findings", "actions"):
            story.append(Paragraph(escape(t[key]), styles["h"]))
            text = getattr(report, key, "") if report else ""
            for line in (text or t["none"]).splitlines() or [t["none"]]:
                story.append(Paragraph(escape(line), styles["p"]))
        percent = f"{sdv['percent_verified']:g}%" if sdv["percent_verified"] is not None else "–"
        story.append(Spacer(1, 4 * mm))
        story.append(Paragraph(escape(t["sdv"].format(verified=sdv["verified"], selected=sdv["selected"],
                                                      percent=percent, discrepancy=sdv["discrepancy"])), styles["p"]))
        following = next_visit or _next_visit(visit)
        story.append(Paragraph(escape(t["next"].format(next=following.isoformat() if following else t["to_plan"])),
                               styles["p"]))
    story += [Spacer(1, 8 * mm), Paragraph(escape(t["regards"]), styles["p"]),
              Paragraph(escape(visit.monitor.name), styles["p"])]
    buffer = io.BytesIO()
    document = SimpleDocTemplate(buffer, pagesize=A4, leftMargin=22 * mm, rightMargin=22 * mm, topMargin=22 * mm,
                                 bottomMargin=22 * mm, title=t[letter], author="TrialOps",
                                 subject=f"{study.protocol_id} site {site.number} {date}")
    document.build(story)
    return buffer.getvalue()


def _next_visit(visit) -> datetime.date | None:
    from sdv.monitoring.models import MonitoringVisit

    following = (MonitoringVisit.objects.filter(site=visit.site, date__gt=visit.date)
                 .exclude(status=MonitoringVisit.Status.CANCELLED).order_by("date").first())
    return following.date if following else None
