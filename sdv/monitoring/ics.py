"""A monitor's visits as an iCalendar (RFC 5545) feed, written with `icalendar`: one all-day event
per visit (an on-site visit spans its days), TENTATIVE while planned, CONFIRMED once confirmed or
done, CANCELLED when cancelled (so a subscribed calendar drops it), with a stable UID and a
SEQUENCE that grows with each change of the visit."""

import datetime

from django.utils import timezone
from icalendar import Calendar, Event

STATUS = {"planned": "TENTATIVE", "confirmed": "CONFIRMED", "done": "CONFIRMED", "cancelled": "CANCELLED"}


def calendar_feed(monitor, visits) -> bytes:
    calendar = Calendar()
    calendar.add("prodid", "-//TrialOps//Monitoring visits//EN")
    calendar.add("version", "2.0")
    calendar.add("calscale", "GREGORIAN")
    calendar.add("x-wr-calname", f"Monitoring visits: {monitor.name} ({monitor.study.protocol_id})")
    now = timezone.now()
    for visit in visits:
        event = Event()
        days = visit.days if visit.kind == "on_site" else 1
        event.add("uid", f"monitoring-visit-{visit.pk}@trialops")
        event.add("dtstamp", now)
        event.add("dtstart", visit.date)
        event.add("dtend", visit.date + datetime.timedelta(days=days))
        kind = "On-site" if visit.kind == "on_site" else "Remote"
        event.add("summary", f"{kind} monitoring visit: site {visit.site.number} {visit.site.name} "
                             f"({visit.study.protocol_id})")
        if visit.kind == "on_site":
            event.add("location", ", ".join(p for p in (visit.site.name, visit.site.city, visit.site.country) if p))
            if visit.site.latitude is not None:
                event.add("geo", (float(visit.site.latitude), float(visit.site.longitude)))
        trip = f" Trip {visit.trip_id}, leg {visit.travel_km:.0f} km." if visit.trip_id else ""
        event.add("description", f"{visit.reason}.{trip} Status: {visit.status}.")
        event.add("status", STATUS[visit.status])
        event.add("sequence", max(0, visit.history.count() - 1))
        event.add("transp", "OPAQUE" if visit.kind == "on_site" else "TRANSPARENT")
        calendar.add_component(event)
    return calendar.to_ical()
