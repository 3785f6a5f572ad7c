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
