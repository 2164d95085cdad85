"""Marshmallow schemas of one IVC-LMS case: every element of the data set, shaped as
``examples/ivclms-001-segment-ii-graft.json``.

Loading gives the canonical form: every field present (null for an absent scalar or object, [] for
an absent list), measured values in their canonical unit. Unknown fields are errors at every level.
Cross-field rules and derived values live in ``service.model.rules``; ``service.model.validate_case``
runs both.
"""

from __future__ import annotations

from typing import Any, ClassVar

from marshmallow import RAISE, Schema, fields, post_load, pre_load

from service.model import fields as f
from service.model.labs import normalise_lab
from service.model.units import DOSE, DURATION, LENGTH, MASS, MAX_AGE_YEARS, TIME, VOLUME, duration_max


class Base(Schema):
    """Unknown fields raise; null lists become []; an optional group with nothing in it becomes null."""

    class Meta:
        unknown = RAISE

    error_messages: ClassVar[dict[str, str]] = {  # type: ignore[misc]
        "unknown": "unknown field",
        "type": "must be an object",
    }
    #: a group whose fields are all optional is stored as null when all of them are empty
    collapse_empty: ClassVar[bool] = False

    @pre_load
    def _null_lists(self, data: Any, **_: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            for name in self._list_names():
                if name in data and data[name] is None:
                    data[name] = []
        return data

    def _list_names(self) -> tuple[str, ...]:
        """The list fields, found once per schema instance (``_null_lists`` runs for every object loaded)."""
        names: tuple[str, ...] | None = self.__dict__.get("_lists")
        if names is None:
            found = self.fields.items()
            names = tuple(name for name, field in found if isinstance(field, fields.List | f.Dimensions))
            self.__dict__["_lists"] = names
        return names

    @post_load
    def _collapse(self, data: dict[str, Any], **_: Any) -> dict[str, Any] | None:
        if self.collapse_empty and all(v is None or v == [] for v in data.values()):
            return None
        return data


def one(schema: type[Base], description: str, *, required: bool = False) -> fields.Nested:
    if required:
        return f.Nested(
            schema,
            required=True,
            allow_none=False,
            metadata={"description": description},
            error_messages={"required": f.REQUIRED, "null": f.NULL},
        )
    return f.Nested(
        schema,
        load_default=None,
        allow_none=True,
        metadata={"description": description},
        error_messages={"required": f.REQUIRED, "null": f.NULL},
    )


def many(inner: fields.Field[Any], description: str, *, group: str | None = None) -> fields.List[Any]:
    return f.List(
        inner,
        load_default=list,
        allow_none=True,
        metadata={"description": description, **({"group": group} if group else {})},
        error_messages={"invalid": "must be a list", "null": f.NULL},
    )


def many_of(schema: type[Base], description: str) -> fields.List[Any]:
    return many(f.Nested(schema, error_messages={"null": f.NULL}), description)


def codes(table_name: str, description: str) -> fields.List[Any]:
    inner = f.Code(table_name, metadata={"table": table_name}, error_messages={"null": f.NULL})
    return many(inner, description)


# ---- shared shapes ------------------------------------------------------------------------


class LabResultSchema(Base):
    test = f.code("lab-test", "Laboratory test.", required=True)
    value = f.bounded_number(
        "Result value, in unit; or a bound {comparator, value} (creatinine < 90, LDH > 250) or a range "
        "{low, high}; value or interpretation is required (a result may be stated only as normal or "
        "abnormal).",
        minimum=None,
    )
    unit = f.text(
        "Unit, required with value: the test's canonical unit (UCUM, see the lab-test table); creatinine "
        "in umol/L, hemoglobin in g/L and calcium in mmol/L are converted.",
    )
    interpretation = f.code(
        "interpretation", "Interpretation as stated (normal, abnormal, high, low), with or without a value."
    )
    date = f.date("Date of the sample.")

    @post_load
    def _convert(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        return normalise_lab(data)


class ImagingSchema(Base):
    modality = f.code("imaging-modality", "Imaging modality.", required=True)
    date = f.date("Date of the study.")
    findings = f.text("Findings, free text.")
    coded_findings = codes("imaging-finding", "What the study showed, coded (text in findings).")
    size_cm = f.dimensions(
        LENGTH, "cm", "Tumour size measured on this study: up to three dimensions [cm], largest first."
    )
    interpretation = f.code(
        "interpretation", "The study's interpretation as stated (e.g. renal scintigraphy normal)."
    )


class UncertainLesionSchema(Base):
    site = f.code("metastasis-site", "Site of the lesion.", required=True)
    nature = f.code("lesion-nature", "Suspected nature (metastasis, infection, other).", required=True)
    certainty = f.code(
        "lesion-certainty", "How certain the suspected nature is (suspected, differential, ruled out)."
    )
    text = f.text("Description; required when site or nature is other.")
    date = f.date("Date the lesion was seen.")


class MetastasisSchema(Base):
    site = f.code("metastasis-site", "Site of metastasis or recurrence.", required=True)
    text = f.text("Description; required when site is other.")
    certainty = f.code("certainty", "Confirmed or suspected.")


# ---- 1-2. case and patient ------------------------------------------------------------------


class IdentifierSchema(Base):
    system = f.uri("Identifier system (URI).", required=True, max_length=f.SYSTEM_MAX)
    value = f.text("Identifier value (MRN or registry pseudonym).", required=True, max_length=f.VALUE_MAX)


class SmokingSchema(Base):
    status = f.code("smoking-status", "Smoking status.", required=True)
    pack_years = f.number("Pack-years.")


class HistorySchema(Base):
    condition = f.code("history-condition", "Relevant prior condition.", required=True)
    text = f.text("Description; required when condition is other.")
    date = f.date("Date of the condition.")


class PerformanceStatusSchema(Base):
    scale = f.code(
        "performance-scale", "Scale: ECOG (0-4) or Karnofsky (0-100, in steps of 10).", required=True
    )
    score = f.number("Score on the scale.", required=True, integer=True, maximum=100)
    date = f.date("Date of the assessment (at diagnosis or at follow-up).")


class PatientSchema(Base):
    identifier = one(IdentifierSchema, "Patient identifier (system + value).", required=True)
    sex = f.code("sex", "Administrative sex.", required=True)
    birth_date = f.date("Birth date; birth_date or age_at_diagnosis is required.")
    age_at_diagnosis = f.number(
        "Age at diagnosis in full years; derived from birth_date and diagnosis.date when the birth "
        "date is known (both given: they must agree); required when diagnosis.date is unknown.",
        integer=True,
        maximum=MAX_AGE_YEARS,
    )
    smoking = one(SmokingSchema, "Smoking status and pack-years.")
    history = many_of(HistorySchema, "Relevant history (coded condition or text, with date).")
    performance_status = many_of(PerformanceStatusSchema, "Performance status (ECOG or Karnofsky) with date.")


# ---- 3. presentation ------------------------------------------------------------------------


class SymptomSchema(Base):
    symptom = f.code("symptom", "Presenting symptom.", required=True)
    text = f.text("Description; required when symptom is other.")
    duration_months = f.bounded_measure(DURATION, "months", "Duration before presentation [months].")


class WeightLossSchema(Base):
    collapse_empty = True

    kg = f.bounded_measure(MASS, "kg", "Weight lost [kg].")
    percent = f.bounded_percent("Weight lost [% of body weight].")
    over_months = f.bounded_measure(DURATION, "months", "Period over which it was lost [months].")


class PresentationSchema(Base):
    collapse_empty = True

    date = f.date("Date of presentation.")
    symptoms = many_of(SymptomSchema, "Symptoms, each with its duration.")
    incidental = f.boolean("Found incidentally on imaging done for something else.")
    weight_loss = one(WeightLossSchema, "Weight loss: amount in kg and/or percent, over a period.")


# ---- 4. diagnosis -----------------------------------------------------------------------------


class TumourSizeSchema(Base):
    dimensions_cm = f.dimensions(LENGTH, "cm", "One to three dimensions [cm], largest first.", required=True)
    method = f.code("size-method", "Measurement method.")
    date = f.date("Date of the measurement.")


class DiagnosisSchema(Base):
    date = f.date("Date of diagnosis; `unknown` when the source gives none.", required=True, unknown=True)
    basis = f.code("diagnosis-basis", "Basis of diagnosis.", required=True)
    biopsy_result = f.text("Biopsy result (text or morphology).")
    imaging = many_of(ImagingSchema, "Imaging studies of the work-up.")
    tumour_size = many_of(TumourSizeSchema, "Tumour size measurements over time.")
    ivc_segment_from = f.code("ivc-segment", "Lowest IVC segment involved.", required=True)
    ivc_segment_to = f.code("ivc-segment", "Highest IVC segment involved (from <= to).", required=True)
    growth_pattern = f.code("growth-pattern", "Growth pattern.")
    luminal_occlusion_percent = f.bounded_percent("Luminal occlusion [%]; 100 = complete.")
    renal_vein_involvement = f.code("renal-vein-involvement", "Renal vein involvement.")
    hepatic_vein_involvement = f.boolean("Hepatic vein involvement.")
    right_atrium_extension = f.boolean("Extension into the right atrium.")
    adjacent_organ_invasion = codes("organ", "Adjacent organs invaded.")
    venous_collaterals = f.code("collaterals", "Venous collaterals.")
    tumour_thrombus = f.boolean("Tumour thrombus.")
    metastases = many_of(MetastasisSchema, "Metastases at diagnosis.")
    uncertain_lesions = many_of(
        UncertainLesionSchema,
        "Lesions of uncertain nature at diagnosis (e.g. a lung nodule: metastasis or infection).",
    )
    labs = many_of(LabResultSchema, "Baseline laboratory results.")


# ---- 5. surgery -------------------------------------------------------------------------------


class OrganResectedSchema(Base):
    organ = f.code("organ", "Organ resected with the tumour.", required=True)
    detail = f.text("Detail (e.g. liver segments); required when organ is other.")


class IvcManagementSchema(Base):
    method = f.code("ivc-management", "IVC management.", required=True)
    graft_material = f.code(
        "graft-material", "Graft or patch material; required for patch_cavoplasty and interposition_graft."
    )
    graft_diameter_mm = f.measure(LENGTH, "mm", "Graft diameter [mm].")


class RenalVeinSchema(Base):
    side = f.code("side", "Side.", required=True)
    management = f.code("renal-vein-management", "Management of this renal vein.", required=True)
    material = f.code("graft-material", "Material; required for reconstruction_with_graft.")


class IntraoperativeEventSchema(Base):
    event = f.code("intraoperative-event", "Intra-operative event (e.g. haemorrhage).", required=True)
    text = f.text("Description; required when event is other.")
    blood_loss_ml = f.bounded_measure(VOLUME, "mL", "Blood lost in the event [mL].")
    transfusion_units = f.number("Red cell units transfused for the event.", integer=True)


class SurgerySchema(Base):
    date = f.date("Date of the operation; `unknown` when the source gives none.", required=True, unknown=True)
    intent = f.code("surgery-intent", "Intent.")
    approach = f.code("approach", "Surgical approach.")
    resection = f.code("resection", "Resection type.", required=True)
    organs_resected = many_of(OrganResectedSchema, "Organs resected with the tumour.")
    ivc_management = one(IvcManagementSchema, "IVC management.", required=True)
    renal_veins = many_of(RenalVeinSchema, "Renal vein management, per side (each side at most once).")
    bypass = f.code("bypass", "Bypass.")
    operative_time_min = f.measure(TIME, "min", "Operative time [min].")
    clamp_time_min = f.measure(TIME, "min", "Vascular clamp (ischaemia) time [min].")
    blood_loss_ml = f.bounded_measure(VOLUME, "mL", "Estimated blood loss [mL].")
    transfusion_units = f.number("Red cell transfusion [units]; 0 when none.", integer=True)
    events = many_of(IntraoperativeEventSchema, "Intra-operative events (haemorrhage, ...).")
    frozen_section = f.text("Intra-operative frozen section result.")


# ---- 6. pathology -----------------------------------------------------------------------------


class IhcSchema(Base):
    marker = f.code("ihc-marker", "Immunohistochemistry marker.", required=True)
    result = f.code("ihc-result", "Result; ki67 needs percent, other markers result or percent.")
    percent = f.percent("Percent of positive cells (required for ki67).")
    text = f.text("Marker name; required when marker is other.")


class MetastaticLesionSchema(Base):
    site = f.code("metastasis-site", "Site of the lesion examined.", required=True)
    text = f.text("Description; required when site is other.")
    confirmed_lms = f.boolean("Lesion confirmed as leiomyosarcoma.")


class PathologySchema(Base):
    histology = f.code("histology", "Histology.", required=True)
    histologic_subtype = codes(
        "histologic-subtype",
        "Histologic subtype / pattern (e.g. spindle cell, fascicular), beside the grade.",
    )
    differentiation = f.code("differentiation", "Differentiation.")
    fnclcc_grade = f.code("fnclcc-grade", "FNCLCC grade (1, 2, 3).", integer=True)
    tumour_size_cm = f.dimensions(
        LENGTH,
        "cm",
        "Pathological tumour size: up to three dimensions [cm], largest first; [] when not measured.",
    )
    margin = f.code("margin", "Resection margin.")
    closest_margin_mm = f.bounded_measure(LENGTH, "mm", "Closest margin [mm].")
    neoadjuvant_response_percent = f.bounded_percent(
        "Response to neoadjuvant therapy (cytoreduction/necrosis) [%]."
    )
    ihc = many_of(IhcSchema, "Immunohistochemistry.")
    metastatic_lesions = many_of(MetastaticLesionSchema, "Metastatic lesions examined.")


# ---- 7. post-operative course -----------------------------------------------------------------


class ComplicationSchema(Base):
    type = f.code("complication", "Complication.", required=True)
    text = f.text("Description; required when type is other.")
    clavien_dindo = f.bounded_code(
        "clavien-dindo", "Clavien-Dindo grade, or a bound on it ({comparator, value}: < IIIa)."
    )
    date = f.date("Date of onset.")


class PostoperativeSchema(Base):
    collapse_empty = True

    had_complications = f.boolean(
        "Whether complications occurred (recorded explicitly): false => complications empty, "
        "true => at least one."
    )
    complications = many_of(ComplicationSchema, "Complications.")
    length_of_stay_days = f.measure(DURATION, "days", "Length of stay [days].")
    icu_stay_days = f.measure(DURATION, "days", "ICU stay [days].")
    mortality_30d = f.boolean("Death within 30 days of surgery.")
    renal_function = many_of(LabResultSchema, "Renal function after surgery.")


# ---- 8. therapies -----------------------------------------------------------------------------


class RadiotherapySchema(Base):
    collapse_empty = True

    total_dose_gy = f.measure(DOSE, "Gy", "Total dose [Gy] = fractions x dose_per_fraction_gy (+ boost_gy).")
    fractions = f.number("Number of fractions.", integer=True)
    dose_per_fraction_gy = f.measure(DOSE, "Gy", "Dose per fraction [Gy].")
    boost_gy = f.measure(DOSE, "Gy", "Boost [Gy].")


class DrugSchema(Base):
    agent = f.code("drug", "Agent.", required=True)
    text = f.text("Agent name; required when agent is other.")
    dose = f.number("Dose, in unit.")
    unit = f.code("dose-unit", "Dose unit.")
    route = f.text("Route, free text (e.g. intravenous, subcutaneous, oral).")
    frequency = f.text("Frequency, free text.")


class TherapySchema(Base):
    kind = f.code("therapy-kind", "Kind of therapy.", required=True)
    timing = f.code("therapy-timing", "Timing.", required=True)
    start = f.date("Start date.")
    end = f.date("End date (not before start).")
    status = f.code("therapy-status", "Status; not_given = stated as not given (e.g. no anticoagulation).")
    not_given_reason = f.text("Why the therapy was not given (only with status not_given).")
    start_postoperative_day = f.number(
        "Started on this post-operative day (0 = day of the operation); needs an operation.",
        integer=True,
        maximum=duration_max("days"),  # counted into dates: bounded like every duration
    )
    radiotherapy = one(RadiotherapySchema, "Radiotherapy dose; only when kind is radiotherapy.")
    drugs = many_of(DrugSchema, "Drugs.")
    cycles_planned = f.number("Cycles planned.", integer=True)
    cycles_completed = f.number("Cycles completed.", integer=True)
    duration_months = f.measure(DURATION, "months", "Duration [months] (not with lifelong).")
    lifelong = f.boolean("Lifelong therapy.")
    stop_reason = f.code("stop-reason", "Reason the therapy ended.")
    stop_reason_text = f.text("Detail of the stop reason (e.g. hepatotoxicity).")


# ---- 9. follow-up -----------------------------------------------------------------------------


class FollowUpSchema(Base):
    date = f.date(
        "Date of the assessment; date or months_after_surgery is required; `unknown` when the source "
        "gives no time (a recurrence then counts, its time and so disease-free survival are unknown).",
        unknown=True,
    )
    months_after_surgery = f.measure(
        DURATION, "months", "Months after the first surgery; derived from date when both dates are full."
    )
    disease_status = f.code("disease-status", "Disease status.", required=True)
    sites = codes("metastasis-site", "Recurrence or metastasis sites.")
    graft_patency = f.code("graft-patency", "Graft patency.")
    renal_function = many_of(LabResultSchema, "Renal function.")
    lower_limb_edema = f.boolean("Lower-limb edema.")
    imaging = many_of(ImagingSchema, "Imaging.")
    uncertain_lesions = many_of(UncertainLesionSchema, "Lesions of uncertain nature seen at this assessment.")


# ---- 10. outcome ------------------------------------------------------------------------------


class OutcomeSchema(Base):
    vital_status = f.code("vital-status", "Vital status.", required=True)
    last_contact = f.date(
        "Date of last contact (not before diagnosis); this or an interval (last_contact_months_after_*) "
        "is required; `unknown` when the source gives neither (survival then unknown).",
        unknown=True,
    )
    last_contact_months_after_diagnosis = f.measure(
        DURATION, "months", "Last contact as an interval after diagnosis, as the source gives it [months]."
    )
    last_contact_months_after_surgery = f.measure(
        DURATION,
        "months",
        "Last contact as an interval after the first surgery, as the source gives it [months].",
    )
    lost_to_follow_up = f.boolean("Lost to follow-up.")
    death_date = f.date("Date of death; only when vital_status is dead.")
    death_cause = f.text("Cause of death; only when vital_status is dead.")


# ---- 11. care plan ----------------------------------------------------------------------------


class ActivitySchema(Base):
    kind = f.code("plan-activity", "Planned activity.", required=True)
    performed = f.text(
        "The entry that carried the activity out: surgery[i] for surgery, therapies[i] (same kind) "
        "for radiotherapy, chemotherapy and anticoagulation; null while not done."
    )
    duration_months = f.measure(DURATION, "months", "Planned duration [months] (not with lifelong).")
    lifelong = f.boolean("Planned lifelong.")
    modality = f.code("imaging-modality", "Surveillance imaging modality (surveillance_imaging only).")
    every_months = f.measure(
        DURATION, "months", "Surveillance interval [months] (surveillance_imaging only)."
    )
    for_years = f.measure(DURATION, "years", "Surveillance period [years] (surveillance_imaging only).")


class CarePlanSchema(Base):
    collapse_empty = True

    decision_date = f.date("Date of the multidisciplinary decision.")
    decision = f.text("Multidisciplinary decision, text.")
    intent = f.code("surgery-intent", "Intent of the plan.")
    activities = many_of(ActivitySchema, "Planned activities.")


# ---- the case ---------------------------------------------------------------------------------


class CaseSchema(Base):
    case_id = f.case_id("Case identifier, unique within the source system.", max_length=f.CASE_ID_MAX)
    source_system = f.source_uri(
        "Source system URI (EHR, registry or literature source).", max_length=f.SYSTEM_MAX
    )
    institution = f.text("Institution.")
    reference = f.text("Reference for published cases (DOI or URL).")
    registry_consent = f.code("consent", "Consent for registry use.")
    patient = one(PatientSchema, "Patient.", required=True)
    presentation = one(PresentationSchema, "Presentation.")
    diagnosis = one(DiagnosisSchema, "Diagnosis and staging work-up.", required=True)
    surgery = many_of(SurgerySchema, "Operations (zero or more).")
    pathology = one(PathologySchema, "Pathology.")
    postoperative = one(PostoperativeSchema, "Post-operative course.")
    therapies = many_of(TherapySchema, "Therapies other than surgery (zero or more).")
    follow_up = many_of(FollowUpSchema, "Follow-up assessments (zero or more).")
    outcome = one(OutcomeSchema, "Outcome.", required=True)
    care_plan = one(CarePlanSchema, "Care plan.")


# The groups of the data set, in order: (field name of the case, title).
GROUPS: list[tuple[str, str]] = [
    ("case", "1. Case and source"),
    ("patient", "2. Patient"),
    ("presentation", "3. Presentation"),
    ("diagnosis", "4. Diagnosis and staging work-up"),
    ("surgery", "5. Surgery"),
    ("pathology", "6. Pathology"),
    ("postoperative", "7. Post-operative course"),
    ("therapies", "8. Therapies other than surgery"),
    ("follow_up", "9. Follow-up"),
    ("outcome", "10. Outcome"),
    ("care_plan", "11. Care plan"),
]
