"""The study's file and column contract: names and types of the three landing CSVs.

Plain data, no Dagster. Every layer refers to columns through these names.
"""

from __future__ import annotations

from dataclasses import dataclass, field

WEIGHT_FILE = "Potato_tidy.csv"
FIBER_FILE = "Potato_fiber_daily.csv"
NUTRITION_FILE = "Potato_nutrition_rows.csv"

# The 11 food categories of the nutrition file, in report order.
FOOD_CATEGORIES: tuple[str, ...] = (
    "potato",
    "beans",
    "vegetables",
    "fruit",
    "oats",
    "rice",
    "bread",
    "nuts",
    "egg",
    "dairy",
    "meat",
)


@dataclass(frozen=True)
class LandingFile:
    """One landing CSV: its name and its columns with the study type of each.

    Types: "int" (subject ids, weeks), "date" (ISO yyyy-mm-dd), "float", "str".
    Every column of `columns` is required (a missing value quarantines the row) unless it is
    listed in `nullable`, where a missing value stays missing (null) and nothing else.
    """

    asset_name: str
    file_name: str
    columns: dict[str, str]
    # Columns that must be present and non-empty on every row.
    keys: tuple[str, ...]
    # Plausible closed ranges; a value outside is a row defect (quarantined).
    ranges: dict[str, tuple[float, float]]
    # Column sets that identify one observation: exact duplicate rows are dropped once,
    # rows that share a key but differ elsewhere conflict and are quarantined.
    unique_keys: tuple[tuple[str, ...], ...] = ()
    # Text columns restricted to a closed vocabulary.
    allowed_values: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # Columns where a blank (or NA, null, none, ...) is allowed and means "not recorded".
    nullable: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        unknown = [c for c in (*self.nullable, *self.keys) if c not in self.columns]
        if unknown or set(self.keys) & set(self.nullable):
            raise ValueError(f"{self.file_name}: nullable/keys name unknown or key columns: {unknown}")

    def is_nullable(self, column: str) -> bool:
        """A column outside the schema is kept as-is, so it may be blank."""
        return column in self.nullable or column not in self.columns

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(c for c in self.columns if c not in self.nullable)


WEIGHT = LandingFile(
    asset_name="weight",
    file_name=WEIGHT_FILE,
    columns={
        "subject_id": "int",
        "date": "date",
        "week": "int",
        "weight_kg": "float",
        "energy_1_10": "float",
        "mood_1_10": "float",
    },
    keys=("subject_id", "date", "week"),
    ranges={
        "subject_id": (1, 10**9),
        "week": (1, 104),
        "weight_kg": (30.0, 300.0),
        "energy_1_10": (1.0, 10.0),
        "mood_1_10": (1.0, 10.0),
    },
    unique_keys=(("subject_id", "date"), ("subject_id", "week")),
    # A weigh-in may miss the scale or a rating; the row still places the subject in its week.
    nullable=("weight_kg", "energy_1_10", "mood_1_10"),
)

FIBER = LandingFile(
    asset_name="fiber",
    file_name=FIBER_FILE,
    columns={
        "subject_id": "int",
        "date": "date",
        "week": "int",
        "total_calories": "float",
        "total_fiber_g": "float",
    },
    keys=("subject_id", "date", "week"),
    ranges={
        "subject_id": (1, 10**9),
        "week": (1, 104),
        "total_calories": (0.0, 10_000.0),
        "total_fiber_g": (0.0, 200.0),
    },
    unique_keys=(("subject_id", "date"),),
    nullable=("total_calories", "total_fiber_g"),
)

NUTRITION = LandingFile(
    asset_name="nutrition",
    file_name=NUTRITION_FILE,
    columns={
        "subject_id": "int",
        "date": "date",
        "food_item": "str",
        "category": "str",
        "calories": "float",
        "protein_g": "float",
        "carbs_g": "float",
        "fat_g": "float",
        "fiber_g": "float",
    },
    keys=("subject_id", "date"),
    ranges={
        "subject_id": (1, 10**9),
        "calories": (0.0, 5_000.0),
        "protein_g": (0.0, 500.0),
        "carbs_g": (0.0, 1_000.0),
        "fat_g": (0.0, 500.0),
        "fiber_g": (0.0, 200.0),
    },
    allowed_values={"category": FOOD_CATEGORIES},
    # The category is what the weekly features count: it is required. An entry without a food
    # name or a nutrient value still counts by category.
    nullable=("food_item", "calories", "protein_g", "carbs_g", "fat_g", "fiber_g"),
)

LANDING_FILES: tuple[LandingFile, ...] = (NUTRITION, WEIGHT, FIBER)

# Ingestion columns added by bronze to every row.
SOURCE_FILE_COL = "source_file"
SOURCE_LINE_COL = "source_line"
INGESTED_AT_COL = "ingested_at"
# A landing CSV may not use these names: its values would be overwritten (ingest refuses it).
RESERVED_COLUMNS: tuple[str, ...] = (SOURCE_FILE_COL, SOURCE_LINE_COL, INGESTED_AT_COL)

# The modelling contract (silver/modeling_dataset -> gold models).
GROUP_COL = "subject_id"
WEEK_COL = "week"
OUTCOME = "delta_kg_next"
PREDICTORS: tuple[str, ...] = ("fiber_g_week", "kcal_week_thousands", "beans_week", "potato_week")
PREDICTOR_UNITS: dict[str, str] = {
    "fiber_g_week": "g of fiber, summed over the study week's logged days",
    "kcal_week_thousands": "thousands of kcal, summed over the study week's logged days",
    "beans_week": "1 if any beans entry was logged that week, else 0",
    "potato_week": "1 if any potato entry was logged that week, else 0",
}
FORMULA = f"{OUTCOME} ~ " + " + ".join(PREDICTORS)

# What each column of the bronze, silver and gold tables means (Dagster shows them in the
# column schema of every table). One meaning per name across tables; per-category food columns
# are described by column_description().
COLUMN_DESCRIPTIONS: dict[str, str] = {
    # Landing / bronze
    "subject_id": "Study participant id",
    "date": "Calendar date of the weigh-in, daily log or food entry (ISO yyyy-mm-dd in the CSV)",
    "week": "Study week, 1 = the subject's first week",
    "weight_kg": "Body weight at the week's weigh-in, kg",
    "energy_1_10": "Self-rated energy at the weigh-in, 1 (low) to 10 (high)",
    "mood_1_10": "Self-rated mood at the weigh-in, 1 (low) to 10 (high)",
    "total_calories": "Calories logged that day, kcal",
    "total_fiber_g": "Fiber logged that day, g",
    "food_item": "Food as the subject logged it (free text)",
    "category": "Food category, one of: " + ", ".join(FOOD_CATEGORIES),
    "calories": "Calories of the food entry, kcal",
    "protein_g": "Protein of the food entry, g",
    "carbs_g": "Carbohydrates of the food entry, g",
    "fat_g": "Fat of the food entry, g",
    "fiber_g": "Fiber of the food entry, g",
    SOURCE_FILE_COL: "Landing file the row was read from",
    SOURCE_LINE_COL: "Line of the row in its landing file (header = line 1)",
    INGESTED_AT_COL: "When bronze ingested the file (UTC)",
    # bronze/quarantine
    "source_file": "Landing file the row was read from",
    "line": "Line of the offending row in its landing file (header = line 1)",
    "column": "Column of the offending value",
    "value": "The offending value as read from the file",
    "reason": "Why the row was quarantined",
    # silver/study_calendar
    "week1_start": "Date the subject's study week 1 starts (weeks of 7 days from it)",
    "n_labelled_rows": "Weigh-in and daily-log rows of the subject whose week labels date week 1",
    # silver/subject_trajectories
    "week_start": "First date of the study week",
    "weigh_in_date": "Date of the week's weigh-in",
    "delta_kg_prev": "Weight change since the previous study week's weigh-in, kg (empty if that week has none)",
    "baseline_week": "First study week with a weigh-in",
    "baseline_weight_kg": "Weight at the baseline week, kg",
    "delta_kg_from_baseline": "Weight change since the baseline week, kg",
    "pct_change_from_baseline": "Weight change since the baseline week, % of the baseline weight",
    "slope_kg_per_week": "Least-squares slope of the subject's weight on study week, kg per week",
    "n_weigh_ins": "Weigh-ins of the subject",
    # silver/weekly_features
    "kcal_sum": "Calories summed over the week's logged days, kcal (empty if none logged)",
    "kcal_mean": "Mean daily calories over the week's logged days, kcal",
    "kcal_days": "Days of the week with calories logged",
    "fiber_g_sum": "Fiber summed over the week's logged days, g (empty if none logged)",
    "fiber_g_mean": "Mean daily fiber over the week's logged days, g",
    "fiber_days": "Days of the week with fiber logged",
    "fiber_g_per_1000kcal": "Fiber per 1000 kcal over the days with both logged, g",
    "food_entries": "Food entries logged that week (empty if the week has no food log)",
    # silver/modeling_dataset
    "weight_kg_next": "Weight at the next study week's weigh-in, kg",
    OUTCOME: "Outcome: next study week's weight minus this week's, kg",
    **{name: f"Predictor: {unit}" for name, unit in PREDICTOR_UNITS.items()},
    # gold/models/<model>: one row per coefficient
    "term": "Model term: Intercept or a predictor",
    "estimate": "Coefficient: change in delta_kg_next (kg) per unit of the predictor; the Intercept in kg",
    "std_error": "Standard error of the estimate (cluster-robust by subject where the model says so)",
    "statistic": "Test statistic: estimate / std_error",
    "p_value": "Two-sided p-value of the test that the coefficient is 0",
    "conf_low": "Lower bound of the 95% confidence interval",
    "conf_high": "Upper bound of the 95% confidence interval",
    # gold/models/model_summary: one row per model
    "model": "Model name: one of the registry's models (study/models.py)",
    "nobs": "Subject-weeks the model was fitted on",
    "n_groups": "Subjects (clusters) the model was fitted on",
    "r2": "R squared (within subjects for fixed effects; empty for the mixed model)",
    "se_type": "How the standard errors were computed",
    "converged": "Whether the fit converged",
    "singular": "Whether the random-effects covariance is singular (mixed model only)",
    "group_var": "Between-subject variance of the random intercept, kg^2 (mixed model only)",
    "residual_var": "Residual variance, kg^2",
    "log_likelihood": "Log-likelihood of the fit (REML for the mixed model); not comparable across models",
}


def column_description(name: str) -> str | None:
    """The description of a table column, or None for a column this contract does not know."""
    if name in COLUMN_DESCRIPTIONS:
        return COLUMN_DESCRIPTIONS[name]
    category, _, kind = name.rpartition("_")
    if category in FOOD_CATEGORIES and kind == "eaten":
        return f"1 if any {category} entry was logged that week, else 0 (empty if the week has no food log)"
    if category in FOOD_CATEGORIES and kind == "entries":
        return f"{category.capitalize()} entries logged that week (empty if the week has no food log)"
    return None
