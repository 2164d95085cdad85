"""A case series posted as CSV, summarised by /registry/summary: figures worked out by hand below.

The first four example cases (rows 1-4 of examples/ivclms-case-series.csv):

    case     age  diagnosis   last contact / death   days   months (days / 30.4375)
    IVC-001  52   2021-02-20  2024-04-20 alive       1155   37.95  censored
    IVC-002  55   2019-05-14  2023-03-01 alive       1387   45.57  censored
    IVC-003  45   2018-02-09  2021-06-18 dead        1225   40.25  death
    IVC-004  61   2020-09-03  2023-11-06 alive       1159   38.08  censored

Ages sorted 45, 52, 55, 61: an even count, so the median is (52 + 55) / 2 = 53.5; range 45-61;
mean 213 / 4 = 53.25, printed 53.3 (whole-year ages: mean to one decimal, half up; issue 15).
Overall survival (Kaplan-Meier) on the times as the extract gives them (0.1 month, review 15: 37.9,
38.1, 40.2, 45.6): censorings at 37.9 and 38.1 leave 2 at risk at 40.2 where 1 dies: S = 1 - 1/2 =
0.5, which is also the median; S(36 months) = 1.
"""

from __future__ import annotations

from service.case_files import EXAMPLE_SERIES
from tests.support.auth import auth_headers as _auth


def test_summary_of_a_posted_csv_series_matches_the_hand_computed_figures(client):
    lines = EXAMPLE_SERIES.read_text().splitlines()
    series = "\n".join(lines[:5]) + "\n"  # header and the first four cases
    posted = client.post("/cases/import", data=series, headers=_auth(), content_type="text/csv")
    assert posted.status_code == 200 and posted.get_json()["created"] == 4
    # IVC-002's registry_consent is "unknown": privacy by default (finding 13) leaves it out unless
    # a caller with the registry role (this token's) names every consent value.
    assert client.get("/registry/summary", headers=_auth()).get_json()["cases"] == 3
    every = "consent=yes&consent=no&consent=unknown"
    summary = client.get(f"/registry/summary?{every}", headers=_auth()).get_json()
    assert summary["cases"] == 4
    age = summary["age_at_diagnosis_years"]
    assert (age["median"], age["min"], age["max"], age["mean"]) == (53.5, 45, 61, 53.3)
    os_ = summary["kaplan_meier"]["overall_survival"]
    assert (os_["n"], os_["events"], os_["median_months"]) == (4, 1, 40.2)
    rows = [(r["time_months"], r["at_risk"], r["events"], r["survival"]) for r in os_["table"]]
    assert rows == [(37.9, 4, 0, 1.0), (38.1, 3, 0, 1.0), (40.2, 2, 1, 0.5), (45.6, 1, 0, 0.5)]
    assert os_["at_months"]["36"]["survival"] == 1.0
    assert summary["deaths"] == 1
