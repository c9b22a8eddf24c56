"""The items of three reporting guidelines, as data: id, section, topic, a short paraphrase, the evidence
finder that fills it from a results bundle (:mod:`validate.report.checklists`), the most a bundle can
say for it (``cap``) and what the author must supply.

Item texts are paraphrased, never quoted (the guidelines' wording is copyrighted): read the published
checklist for the exact wording. Sources:

- TRIPOD+AI: Collins GS, Moons KGM, Dhiman P, et al. TRIPOD+AI statement: updated guidance for
  reporting clinical prediction models that use regression or machine learning methods.
  BMJ 2024;385:e078378. 27 items, with sub-items (52 rows here).
- CLAIM 2024: Tejani AS, Klontzas ME, Gatti AA, et al. Checklist for Artificial Intelligence in
  Medical Imaging (CLAIM): 2024 Update. Radiol Artif Intell 2024;6(4):e240300. 44 items. The
  numbering here was checked against two independent public listings of the 2024 items, not against
  the article itself.
- STARD-AI: Sounderajah V, et al. The STARD-AI reporting guideline for diagnostic accuracy studies
  using artificial intelligence. Nat Med 2025. STARD-AI extends STARD 2015 (Bossuyt PM, Reitsma JB,
  Bruns DE, et al. BMJ 2015;351:h5527). Its added AI-specific items could not be verified when this
  table was written, so only the 30 STARD 2015 items (34 rows with sub-items), numbered as STARD 2015,
  are listed; :data:`STARD_AI_NOTE` says so in every STARD-AI checklist.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Status = Literal["filled", "partial", "author"]


@dataclass(frozen=True)
class Item:
    """One checklist row. ``finder`` names a function of :data:`validate.report.checklists.FINDERS`
    (None: nothing in a bundle can answer it); ``cap`` is the best status a bundle can earn for it
    (``partial`` where the item also asks for what only the author knows)."""

    id: str
    section: str
    topic: str
    text: str
    finder: str | None
    author: str
    cap: Status = "filled"


def _items(section: str, rows: list[tuple]) -> list[Item]:
    return [Item(r[0], section, r[1], r[2], r[3], r[4], *(r[5:] or ())) for r in rows]


P: Status = "partial"

TRIPOD_AI: tuple[Item, ...] = tuple(
    _items(
        "Title and abstract",
        [
            (
                "1",
                "Title",
                "The title says a prediction model is developed or evaluated, for which population and outcome.",
                None,
                "the manuscript title",
            ),
            (
                "2",
                "Abstract",
                "A structured abstract following the TRIPOD+AI for Abstracts checklist.",
                None,
                "the abstract",
            ),
        ],
    )
    + _items(
        "Introduction",
        [
            (
                "3a",
                "Background",
                "Healthcare context (diagnostic or prognostic), rationale for the model, and existing models.",
                None,
                "the clinical context, rationale and prior models",
            ),
            (
                "3b",
                "Background",
                "Target population, intended purpose in the care pathway, and intended users.",
                "description",
                "the intended use, care pathway and users",
                P,
            ),
            (
                "3c",
                "Background",
                "Known health inequalities between sociodemographic groups.",
                None,
                "known inequalities relevant to the model",
            ),
            (
                "4",
                "Objectives",
                "Objectives, saying whether the study develops the model, evaluates it, or both.",
                "study_kind",
                "the objectives in words",
                P,
            ),
        ],
    )
    + _items(
        "Methods",
        [
            (
                "5a",
                "Data",
                "Data sources for development and for evaluation, why they were used, and how representative they are.",
                "sites_setting",
                "the type of each data source (cohort, routine care, registry...) and its representativeness",
                P,
            ),
            (
                "5b",
                "Data",
                "Dates of data collection: start and end of accrual and, where relevant, of follow-up.",
                "dates",
                "accrual and follow-up dates",
                P,
            ),
            (
                "6a",
                "Participants",
                "Study setting (primary or secondary care, general population) with number and location of centres.",
                "sites_setting",
                "the care setting and location of each centre",
                P,
            ),
            ("6b", "Participants", "Eligibility criteria for participants.", None, "inclusion and exclusion criteria"),
            (
                "6c",
                "Participants",
                "Treatments received and how they were handled, where relevant.",
                None,
                "treatments and their handling",
            ),
            (
                "7",
                "Data preparation",
                "Pre-processing and quality checks, and whether they were alike across sociodemographic groups.",
                "preprocessing",
                "quality checks, and whether preparation differed between groups",
                P,
            ),
            (
                "8a",
                "Outcome",
                "Definition of the predicted outcome and time horizon, how and when it was assessed, why it was "
                "chosen, and whether it was assessed alike across groups.",
                "outcome",
                "the clinical definition, time horizon and assessment of the outcome",
                P,
            ),
            (
                "8b",
                "Outcome",
                "Qualifications and demographics of outcome assessors, where assessment is subjective.",
                None,
                "who assessed the outcome",
            ),
            ("8c", "Outcome", "Any blinding of outcome assessment.", None, "blinding of outcome assessment"),
            (
                "9a",
                "Predictors",
                "How the initial predictors were chosen, and any pre-selection.",
                None,
                "how predictors were chosen (model development)",
            ),
            (
                "9b",
                "Predictors",
                "Definition of every predictor, how and when it was measured, and any blinding.",
                "predictors",
                "how and when each predictor was measured",
                P,
            ),
            (
                "9c",
                "Predictors",
                "Qualifications and demographics of predictor assessors, where assessment is subjective.",
                None,
                "who assessed subjective predictors",
            ),
            (
                "10",
                "Sample size",
                "How the study size was reached (development and evaluation separately), why it suffices, and any "
                "sample size calculation.",
                "sample_size",
                "how the study size was arrived at",
                P,
            ),
            (
                "11",
                "Missing data",
                "How missing data were handled, and why any data were omitted.",
                "missing",
                "how missing predictor values were handled (imputation, model behaviour)",
                P,
            ),
            (
                "12a",
                "Analytical methods",
                "How the data were used (development, evaluation), including any partitioning, considering sample "
                "size.",
                "data_use",
                "the development-side partitioning, if any",
            ),
            (
                "12b",
                "Analytical methods",
                "How predictors were handled (functional form, rescaling, transformation, standardisation).",
                "preprocessing",
                "the handling of predictors inside the model",
                P,
            ),
            (
                "12c",
                "Analytical methods",
                "Model type and rationale, all model-building steps including hyperparameter tuning, and internal "
                "validation.",
                None,
                "model type, building steps, tuning and internal validation (model development)",
            ),
            (
                "12d",
                "Analytical methods",
                "How heterogeneity of model parameters and performance across clusters (e.g. hospitals) was handled "
                "and quantified.",
                "heterogeneity",
                "the interpretation of between-site differences",
            ),
            (
                "12e",
                "Analytical methods",
                "Every performance measure and plot (discrimination, calibration, clinical utility) with its "
                "rationale, and how models were compared.",
                "measures",
                "why these measures were chosen",
            ),
            (
                "12f",
                "Analytical methods",
                "Any model updating (e.g. recalibration) arising from the evaluation, overall or for groups or "
                "settings.",
                "updating",
                "whether an updated model is proposed",
            ),
            (
                "12g",
                "Analytical methods",
                "For evaluation, how predictions were computed (formula, code, object, API).",
                "prediction_calc",
                "nothing further, unless the model is accessed another way in practice",
            ),
            (
                "13",
                "Class imbalance",
                "Whether class-imbalance methods were used, why and how, and any recalibration after them.",
                None,
                "whether development used class-imbalance methods (the prevalence per site is under item 20b)",
            ),
            (
                "14",
                "Fairness",
                "Approaches used to address model fairness, and why.",
                "fairness",
                "the fairness approach and its rationale",
                P,
            ),
            (
                "15",
                "Model output",
                "The model's output (probabilities, classes), and how and why any classification thresholds were "
                "chosen.",
                "model_output",
                "the rationale for each threshold",
                P,
            ),
            (
                "16",
                "Training versus evaluation",
                "Differences between development and evaluation data in setting, eligibility, outcome and predictors.",
                "shift",
                "differences in setting, eligibility and outcome definition, which a bundle cannot see",
                P,
            ),
            (
                "17",
                "Ethical approval",
                "The ethics committee that approved the study, and consent or its waiver.",
                None,
                "ethics approval and consent",
            ),
        ],
    )
    + _items(
        "Open science",
        [
            ("18a", "Funding", "Sources of funding and the funders' role.", None, "funding and the funders' role"),
            (
                "18b",
                "Conflicts of interest",
                "Conflicts of interest and financial disclosures of all authors.",
                None,
                "conflicts of interest",
            ),
            (
                "18c",
                "Protocol",
                "Where the study protocol can be accessed, or that none was prepared.",
                "protocol_doc",
                "where the study protocol is published",
                P,
            ),
            (
                "18d",
                "Registration",
                "Registration of the study (registry and number), or that it was not registered.",
                None,
                "registry name and number",
            ),
            ("18e", "Data sharing", "Availability of the study data.", None, "data availability"),
            (
                "18f",
                "Code sharing",
                "Availability of the analysis code.",
                "code",
                "where the code and the model can be obtained",
                P,
            ),
        ],
    )
    + _items(
        "Patient and public involvement",
        [
            (
                "19",
                "Patient and public involvement",
                "Patient and public involvement in the study, or that there was none.",
                None,
                "patient and public involvement",
            )
        ],
    )
    + _items(
        "Results",
        [
            (
                "20a",
                "Participants",
                "Flow of participants, with numbers with and without the outcome and follow-up where relevant; a "
                "diagram may help.",
                "flow",
                "a flow diagram from the eligible population to the manifests",
            ),
            (
                "20b",
                "Participants",
                "Characteristics overall and per data source: dates, key predictors and demographics, treatments, "
                "sample size, events, follow-up, missing data; differences across demographic groups.",
                "characteristics",
                "characteristics not declared as attributes (treatments, follow-up, clinical variables)",
                P,
            ),
            (
                "20c",
                "Participants",
                "For evaluation, the distribution of important predictors, demographics and outcome compared with "
                "the development data.",
                "shift",
                "nothing further",
            ),
            (
                "21",
                "Model development",
                "Number of participants and outcome events in each analysis (development, tuning, evaluation).",
                "analysis_counts",
                "the counts of the development-side analyses, if any",
            ),
            (
                "22",
                "Model specification",
                "The full model (formula, code, object, API) so that others can make predictions and evaluate it, "
                "and any access restrictions.",
                "model_identity",
                "where the model can be obtained and under which terms",
                P,
            ),
            (
                "23a",
                "Model performance",
                "Performance estimates with confidence intervals, including key (e.g. sociodemographic) subgroups; "
                "plots may help.",
                "performance",
                "nothing further",
            ),
            (
                "23b",
                "Model performance",
                "Results of any analysis of heterogeneity in performance across clusters.",
                "heterogeneity",
                "nothing further",
            ),
            (
                "24",
                "Model updating",
                "Results of any model updating, including the updated model and its performance.",
                "updating_results",
                "nothing further, unless an updated model is proposed",
            ),
        ],
    )
    + _items(
        "Discussion",
        [
            (
                "25",
                "Interpretation",
                "Overall interpretation of the main results, including fairness, in view of the objectives and "
                "previous studies.",
                "gates",
                "the interpretation",
                P,
            ),
            (
                "26",
                "Limitations",
                "Limitations (non-representative sample, sample size, overfitting, missing data) and their effect on "
                "bias, uncertainty and generalisability.",
                "limitations",
                "the discussion of these limitations",
                P,
            ),
            (
                "27a",
                "Usability",
                "Limitations when input data are of poor quality or unavailable in the care pathway.",
                "input_failures",
                "how unreadable or missing inputs would be handled in practice",
                P,
            ),
            (
                "27b",
                "Usability",
                "Whether users must interact with input handling or model use, and the expertise they need.",
                None,
                "user interaction and expertise",
            ),
            (
                "27c",
                "Usability",
                "Next steps for research, with a view to applicability and generalisability.",
                None,
                "next steps",
            ),
        ],
    )
)

CLAIM_2024: tuple[Item, ...] = tuple(
    _items(
        "Title and abstract",
        [
            (
                "1",
                "Title or abstract",
                "Identifies the study as one of AI methods, naming the category of technology (e.g. deep learning).",
                None,
                "the title and abstract wording",
            ),
            ("2", "Abstract", "A summary of design, methods, results and conclusions.", None, "the abstract"),
        ],
    )
    + _items(
        "Introduction",
        [
            (
                "3",
                "Background",
                "Scientific and clinical background, with the intended use and role of the AI approach.",
                "description",
                "the scientific background and clinical role",
                P,
            ),
            (
                "4",
                "Objectives",
                "Aims, objectives and hypotheses.",
                "study_kind",
                "the objectives and hypotheses in words",
                P,
            ),
        ],
    )
    + _items(
        "Methods: study design",
        [
            (
                "5",
                "Study design",
                "Whether the study is prospective or retrospective.",
                None,
                "prospective or retrospective",
            ),
            (
                "6",
                "Study design",
                "The study goal (model creation, exploratory, feasibility, non-inferiority...).",
                "study_kind",
                "the study goal in words",
                P,
            ),
        ],
    )
    + _items(
        "Methods: data",
        [
            ("7", "Data", "Data sources.", "sites_setting", "the type and origin of each data source", P),
            (
                "8",
                "Data",
                "Inclusion and exclusion criteria.",
                "flow",
                "the inclusion and exclusion criteria themselves",
                P,
            ),
            ("9", "Data", "Data pre-processing steps.", "preprocessing", "any pre-processing outside validate", P),
            ("10", "Data", "Selection of data subsets, where applicable.", None, "how subsets were selected, if any"),
            (
                "11",
                "Data",
                "De-identification methods.",
                "deidentification",
                "how images and records were de-identified before the study",
                P,
            ),
            ("12", "Data", "How missing data were handled.", "missing", "how missing inputs were handled", P),
            (
                "13",
                "Data",
                "Image acquisition protocol (equipment, parameters).",
                "acquisition",
                "the acquisition protocol",
                P,
            ),
        ],
    )
    + _items(
        "Methods: reference standard",
        [
            (
                "14",
                "Reference standard",
                "Definition of the method(s) used to obtain the reference standard.",
                "outcome",
                "how the reference standard was obtained",
                P,
            ),
            (
                "15",
                "Reference standard",
                "Rationale for the choice of reference standard.",
                None,
                "the rationale for the reference standard",
            ),
            (
                "16",
                "Reference standard",
                "Source of the reference standard annotations and the annotators' qualifications.",
                None,
                "who annotated, with what qualifications",
            ),
            (
                "17",
                "Reference standard",
                "How the test set was annotated, in enough detail to replicate, including tools.",
                None,
                "the annotation procedure and tools",
            ),
            (
                "18",
                "Reference standard",
                "Inter- and intra-rater variability and how discrepancies were resolved.",
                None,
                "rater variability",
            ),
        ],
    )
    + _items(
        "Methods: data partitions",
        [
            (
                "19",
                "Data partitions",
                "How data were assigned to partitions, with their proportions.",
                "data_use",
                "the training and tuning partitions of development",
                P,
            ),
            (
                "20",
                "Data partitions",
                "The level at which partitions are disjoint (patient, series, image).",
                "partitions",
                "that development and test data share no patient",
                P,
            ),
        ],
    )
    + _items(
        "Methods: testing data",
        [
            (
                "21",
                "Testing data",
                "Intended sample size and how it was determined.",
                "sample_size",
                "how the sample size was determined",
                P,
            )
        ],
    )
    + _items(
        "Methods: model",
        [
            (
                "22",
                "Model",
                "Detailed description of the model: inputs, outputs, architecture.",
                "model_identity",
                "the architecture and all its layers",
                P,
            ),
            (
                "23",
                "Model",
                "Software libraries, frameworks and packages, with versions.",
                "software",
                "the training environment",
                P,
            ),
            (
                "24",
                "Model",
                "Initialisation of model parameters.",
                None,
                "parameter initialisation (model development)",
            ),
        ],
    )
    + _items(
        "Methods: training",
        [
            (
                "25",
                "Training",
                "Training details: augmentation, hyperparameters, number of models trained.",
                None,
                "the training procedure (model development)",
            ),
            ("26", "Training", "How the final model was selected.", None, "model selection (model development)"),
            ("27", "Training", "Ensembling techniques, where used.", None, "ensembling, if any"),
        ],
    )
    + _items(
        "Methods: evaluation",
        [
            ("28", "Evaluation", "Metrics of model performance.", "measures", "why these metrics were chosen"),
            (
                "29",
                "Evaluation",
                "Statistical measures of significance and uncertainty (e.g. confidence intervals).",
                "uncertainty",
                "nothing further",
            ),
            ("30", "Evaluation", "Robustness or sensitivity analysis.", "robustness", "nothing further"),
            (
                "31",
                "Evaluation",
                "Methods for explainability or interpretability, and how they were validated.",
                None,
                "explainability methods, if any",
            ),
            (
                "32",
                "Evaluation",
                "Evaluation on internal data.",
                "internal",
                "the internal validation of development",
                P,
            ),
            ("33", "Evaluation", "Testing on external data.", "external", "nothing further"),
            ("34", "Evaluation", "Clinical trial registration, where applicable.", None, "registration, if a trial"),
        ],
    )
    + _items(
        "Results",
        [
            (
                "35",
                "Data",
                "Numbers of patients or examinations included and excluded (flow), e.g. with a diagram.",
                "flow",
                "a flow diagram from the eligible population to the manifests",
            ),
            (
                "36",
                "Data",
                "Demographic and clinical characteristics of the cases in each partition.",
                "characteristics",
                "characteristics not declared as attributes",
                P,
            ),
            (
                "37",
                "Model performance",
                "Performance metrics and their statistical uncertainty.",
                "performance",
                "nothing further",
            ),
            (
                "38",
                "Model performance",
                "Estimates of diagnostic performance and their precision.",
                "diagnostic",
                "nothing further",
            ),
            (
                "39",
                "Model performance",
                "Failure analysis of incorrect results.",
                "failure_analysis",
                "the review of the listed errors",
            ),
        ],
    )
    + _items(
        "Discussion",
        [
            (
                "40",
                "Limitations",
                "Study limitations: bias, statistical uncertainty, generalisability.",
                "limitations",
                "the discussion of these limitations",
                P,
            ),
            (
                "41",
                "Implications",
                "Implications for practice, with intended use and clinical role.",
                "gates",
                "the implications for practice",
                P,
            ),
        ],
    )
    + _items(
        "Other information",
        [
            (
                "42",
                "Protocol",
                "Where the full study protocol or further technical details can be found.",
                "protocol_doc",
                "where the study protocol is published",
                P,
            ),
            (
                "43",
                "Availability",
                "Availability of the software, the trained model and the data.",
                "code",
                "where the code, model and data can be obtained",
                P,
            ),
            ("44", "Funding", "Funding and other support; the funders' role.", None, "funding"),
        ],
    )
)

STARD_AI: tuple[Item, ...] = tuple(
    _items(
        "Title and abstract",
        [
            (
                "1",
                "Title or abstract",
                "Identifies a diagnostic accuracy study reporting at least one accuracy measure.",
                None,
                "the title and abstract wording",
            ),
            ("2", "Abstract", "Structured summary of design, methods, results and conclusions.", None, "the abstract"),
        ],
    )
    + _items(
        "Introduction",
        [
            (
                "3",
                "Background",
                "Scientific and clinical background, with the intended use and clinical role of the index test.",
                "description",
                "the background and clinical role",
                P,
            ),
            (
                "4",
                "Objectives",
                "Objectives and hypotheses.",
                "study_kind",
                "the objectives and hypotheses in words",
                P,
            ),
        ],
    )
    + _items(
        "Methods",
        [
            (
                "5",
                "Study design",
                "Whether data collection was planned before (prospective) or after (retrospective) the tests.",
                None,
                "prospective or retrospective",
            ),
            ("6", "Participants", "Eligibility criteria.", None, "inclusion and exclusion criteria"),
            (
                "7",
                "Participants",
                "On what basis potentially eligible participants were identified.",
                None,
                "how participants were identified",
            ),
            (
                "8",
                "Participants",
                "Where and when potentially eligible participants were identified (setting, location, dates).",
                "where_when",
                "the care setting and accrual dates",
                P,
            ),
            (
                "9",
                "Participants",
                "Whether participants formed a consecutive, random or convenience series.",
                None,
                "the sampling of participants",
            ),
            (
                "10a",
                "Test methods",
                "The index test, in enough detail to replicate.",
                "index_test",
                "how the model is deployed and read in practice",
                P,
            ),
            (
                "10b",
                "Test methods",
                "The reference standard, in enough detail to replicate.",
                "outcome",
                "how the reference standard was obtained",
                P,
            ),
            (
                "11",
                "Test methods",
                "Rationale for the choice of reference standard.",
                None,
                "the rationale for the reference standard",
            ),
            (
                "12a",
                "Test methods",
                "Positivity cut-offs or result categories of the index test, their rationale, pre-specified or "
                "exploratory.",
                "thresholds",
                "the rationale for each cut-off",
                P,
            ),
            (
                "12b",
                "Test methods",
                "Positivity cut-offs or result categories of the reference standard, likewise.",
                None,
                "the reference standard's categories",
            ),
            (
                "13a",
                "Test methods",
                "Whether clinical information and reference standard results were available to those performing or "
                "reading the index test.",
                None,
                "blinding of the index test",
            ),
            (
                "13b",
                "Test methods",
                "Whether clinical information and index test results were available to the reference standard "
                "assessors.",
                None,
                "blinding of the reference standard",
            ),
            (
                "14",
                "Analysis",
                "Methods for estimating or comparing measures of diagnostic accuracy.",
                "measures",
                "nothing further",
            ),
            (
                "15",
                "Analysis",
                "How indeterminate index test or reference standard results were handled.",
                "indeterminate",
                "how indeterminate reference standard results were handled",
                P,
            ),
            (
                "16",
                "Analysis",
                "How missing data on the index test and reference standard were handled.",
                "missing",
                "how missing reference standard results were handled",
                P,
            ),
            (
                "17",
                "Analysis",
                "Analyses of variability in diagnostic accuracy, pre-specified or exploratory.",
                "variability",
                "nothing further",
            ),
            (
                "18",
                "Analysis",
                "Intended sample size and how it was determined.",
                "sample_size",
                "how the sample size was determined",
                P,
            ),
        ],
    )
    + _items(
        "Results",
        [
            (
                "19",
                "Participants",
                "Flow of participants, using a diagram.",
                "flow",
                "a flow diagram from the eligible population to the manifests",
            ),
            (
                "20",
                "Participants",
                "Baseline demographic and clinical characteristics of participants.",
                "characteristics",
                "characteristics not declared as attributes",
                P,
            ),
            (
                "21a",
                "Participants",
                "Distribution of severity of disease in those with the target condition.",
                None,
                "disease severity",
            ),
            (
                "21b",
                "Participants",
                "Distribution of alternative diagnoses in those without the target condition.",
                None,
                "alternative diagnoses",
            ),
            (
                "22",
                "Participants",
                "Time interval and any clinical interventions between index test and reference standard.",
                None,
                "the interval between index test and reference standard",
            ),
            (
                "23",
                "Test results",
                "Cross tabulation of index test results (or their distribution) by reference standard results.",
                "crosstab",
                "the 2x2 counts at each cut-off",
                P,
            ),
            (
                "24",
                "Test results",
                "Estimates of diagnostic accuracy and their precision (e.g. 95% confidence intervals).",
                "diagnostic",
                "nothing further",
            ),
            (
                "25",
                "Test results",
                "Any adverse events from performing the index test or the reference standard.",
                None,
                "adverse events",
            ),
        ],
    )
    + _items(
        "Discussion",
        [
            (
                "26",
                "Limitations",
                "Limitations: sources of bias, statistical uncertainty, generalisability.",
                "limitations",
                "the discussion of these limitations",
                P,
            ),
            (
                "27",
                "Implications",
                "Implications for practice, with the intended use and clinical role of the index test.",
                "gates",
                "the implications for practice",
                P,
            ),
        ],
    )
    + _items(
        "Other information",
        [
            ("28", "Registration", "Registration number and name of registry.", None, "registry name and number"),
            (
                "29",
                "Protocol",
                "Where the full study protocol can be accessed.",
                "protocol_doc",
                "where the study protocol is published",
                P,
            ),
            ("30", "Funding", "Sources of funding and other support; the funders' role.", None, "funding"),
        ],
    )
)

STARD_AI_NOTE = (
    "STARD-AI extends STARD 2015 with AI-specific items. Those added items could not be verified when this "
    "checklist was written, so it lists the 30 STARD 2015 items (34 rows with sub-items), numbered as in "
    "STARD 2015 (Bossuyt et al., BMJ 2015;351:h5527). Check the published STARD-AI checklist for its "
    "added items and its numbering before you submit."
)


@dataclass(frozen=True)
class Guideline:
    key: str
    name: str
    citation: str
    note: str
    items: tuple[Item, ...]


GUIDELINES: dict[str, Guideline] = {
    "tripod-ai": Guideline(
        "tripod-ai",
        "TRIPOD+AI",
        "Collins GS, Moons KGM, Dhiman P, et al. TRIPOD+AI statement: updated guidance for reporting clinical "
        "prediction models that use regression or machine learning methods. BMJ 2024;385:e078378.",
        "27 items with sub-items, for studies that develop or evaluate a prediction model.",
        TRIPOD_AI,
    ),
    "claim": Guideline(
        "claim",
        "CLAIM 2024",
        "Tejani AS, Klontzas ME, Gatti AA, et al. Checklist for Artificial Intelligence in Medical Imaging "
        "(CLAIM): 2024 Update. Radiol Artif Intell 2024;6(4):e240300.",
        "44 items, for studies of AI in medical imaging.",
        CLAIM_2024,
    ),
    "stard-ai": Guideline(
        "stard-ai",
        "STARD-AI",
        "Sounderajah V, et al. The STARD-AI reporting guideline for diagnostic accuracy studies using "
        "artificial intelligence. Nat Med 2025; extending STARD 2015 (Bossuyt PM, et al. BMJ 2015;351:h5527).",
        STARD_AI_NOTE,
        STARD_AI,
    ),
}
