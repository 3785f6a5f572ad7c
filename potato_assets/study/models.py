"""The model registry: every model of next-week weight change the study fits, one entry each.

Assets, checks, the report and experiment tracking derive everything model-specific from
:data:`MODELS`; adding a model is one :class:`ModelSpec` here plus its fit in ``study/fitting.py`` (the library
reference) and ``study/sufficient.py`` (the production fit from per-subject statistics).
Each model's name is spelled once, in its entry below (a test holds the package to that).

Plain data: importing this module loads neither numpy nor the fitting libraries, so the Dagster
code location can build its graph from it cheaply; :meth:`ModelSpec.fit` imports the fits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

    from potato_assets.study.fitting import ModelFit
    from potato_assets.study.sufficient import Panel


@dataclass(frozen=True)
class ModelSpec:
    """One model: its name (gold table gold/models/<name>), how it is fitted and how it reads."""

    name: str
    # Short plain-language name, bold in the report's "How to read this".
    label: str
    # The asset description (the formula is appended by the asset).
    description: str
    # The fit function, by name so the registry stays import-light: study/fitting.py holds the
    # library fit on a whole table, study/sufficient.py the same fit from per-subject statistics.
    fitter: str
    # The library that estimates it (the asset's kind).
    library: str
    # How the estimate is found, as logged to the experiment tracker.
    estimation: str
    # The report's one-phrase account of how it treats differences between subjects.
    pooling: str
    # The report's explanation, after "<label> (<name>)".
    reading: str
    # Standard errors clustered by subject: checked for enough clusters.
    clustered_se: bool = False
    # Subject effects absorb the intercept; its R² is the within-subject R².
    absorbs_intercept: bool = False
    # Between-subject and residual variances are estimated: checked for a singular fit.
    has_variance_components: bool = False
    # Fitted by an iterative optimiser whose kept attempt is in ``details["kept_attempt"]``.
    optimiser: str | None = None

    def fit(self, modeling: pd.DataFrame) -> ModelFit:
        """The library fit on the whole table (statsmodels/linearmodels): the tests' reference."""
        from potato_assets.study import fitting

        fitter = getattr(fitting, self.fitter)
        return fitter(modeling)

    def fit_panel(self, panel: Panel) -> ModelFit:
        """The same fit from per-subject sufficient statistics (study/sufficient.py), any size."""
        from potato_assets.study import sufficient

        fitter = getattr(sufficient, self.fitter)
        return fitter(panel)


OLS_CLUSTER = ModelSpec(
    name="ols_cluster",
    label="Pooled OLS",
    description="Pooled OLS with standard errors clustered by subject.",
    fitter="fit_ols_cluster",
    library="statsmodels",
    estimation="closed form (least squares from per-subject sufficient statistics, equal to statsmodels OLS)",
    pooling="pooled across everyone",
    reading=(
        "treats all subject-weeks alike: its coefficients mix differences between subjects with changes within a subject."
    ),
    clustered_se=True,
)
FIXED_EFFECTS = ModelSpec(
    name="fixed_effects",
    label="Fixed effects",
    description="Within-subject (entity) fixed effects, standard errors clustered by subject.",
    fitter="fit_fixed_effects",
    library="linearmodels",
    estimation="closed form (within transformation from per-subject sufficient statistics, equal to linearmodels PanelOLS)",
    pooling="within each subject",
    reading=(
        "give every subject their own intercept, so the coefficients describe within-subject associations: "
        "weeks in which a subject ate more fiber than their own average, compared with their other weeks. "
        "There is no overall intercept, and R² is the within-subject R²."
    ),
    clustered_se=True,
    absorbs_intercept=True,
)
MIXED_EFFECTS = ModelSpec(
    name="mixed_effects",
    label="Mixed model",
    description=(
        "Random-intercept linear mixed model by REML "
        "(best of several optimisers, checked against the profiled REML optimum)."
    ),
    fitter="fit_mixed_effects",
    library="statsmodels",
    estimation="profiled REML (GLS at the profiled optimum; no MixedLM fit kept)",
    pooling="partially pooled",
    reading=(
        "gives each subject a random intercept drawn from a common distribution (partial pooling): "
        "subjects with few weeks are shrunk towards the cohort. The between-subject and residual "
        "variances are its variance components; a singular fit means the between-subject variance is about zero."
    ),
    has_variance_components=True,
    optimiser="statsmodels MixedLM REML",
)

# Report and table order.
MODELS: tuple[ModelSpec, ...] = (OLS_CLUSTER, FIXED_EFFECTS, MIXED_EFFECTS)
MODEL_NAMES: tuple[str, ...] = tuple(spec.name for spec in MODELS)
MODELS_BY_NAME: dict[str, ModelSpec] = {spec.name: spec for spec in MODELS}
