"""Plain-language explanations of a site's risk: which KRIs are flagged, how far the site is from
the study and compared with what. Written for a CRA or a study manager, not a statistician."""


def _number(value):
    return None if value is None or value != value else float(value)  # NaN is not equal to itself


def flagged_kris(results, definitions: dict) -> list[dict]:
    """The site's flagged KRI results (flag not 0 and not masked), largest |score| first. `results`
    are KriResult rows or tuples with the same attribute names."""
    flagged = []
    for r in results:
        if _number(r.flag) is None or r.flag == 0:
            continue
        definition = definitions.get(r.kri_id)
        flagged.append({"kri": r.kri_id, "abbreviation": definition.abbreviation if definition else r.kri_id,
                        "name": definition.name if definition else r.kri_id,
                        "numerator_label": definition.numerator_label if definition else "events",
                        "denominator_label": definition.denominator_label if definition else "volume",
                        "metric": float(r.metric), "overall": _number(r.overall), "score": _number(r.score),
                        "flag": int(r.flag), "numerator": float(r.numerator), "denominator": float(r.denominator)})
    return sorted(flagged, key=lambda f: -abs(f["score"] or 0))


def _ratio(metric: float, overall: float | None) -> str:
    if not overall:
        return ""
    ratio = metric / overall
    return f"{ratio:.1f} times the study's" if ratio >= 1 else f"{ratio:.0%} of the study's"


def kri_sentence(f: dict) -> str:
    overall = f["overall"]
    # Compared with the study-wide metric, not by the score's sign: an identity or Fisher score
    # (a compliance rate, a p-value) has no sign to read a direction from.
    above = overall is None or f["metric"] > overall
    direction = "higher" if above else "lower"
    strength = "far " if abs(f["flag"]) >= 2 else ""
    compared = f" ({_ratio(f['metric'], overall)} {overall:.4g})" if overall else ""
    return (f"{f['name']} is {strength}{direction} than the study: {f['metric']:.4g}{compared}, "
            f"{f['numerator']:g} {f['numerator_label'].lower()} over {f['denominator']:g} "
            f"{f['denominator_label'].lower()}; score {f['score'] or 0:+.2f} (flag {f['flag']:+d}).")


def site_explanation(*, site, score: float, tier: str, flagged: list[dict]) -> str:
    if not flagged:
        return f"Site {site.number}: no KRI flagged; risk score {score:.0f}, {tier} risk."
    names = ", ".join(f["abbreviation"] for f in flagged)
    lines = [f"Site {site.number}: {len(flagged)} KRI(s) flagged ({names}); risk score {score:.0f}, {tier} risk."]
    return " ".join([*lines, *(kri_sentence(f) for f in flagged)])
