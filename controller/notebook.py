"""sdlab from Python: a campaign object over the same store the controller writes.

For a notebook or a script, as Ax's ``Client`` or BayBE's ``Campaign`` are::

    from controller import Campaign

    c = Campaign.from_file("examples/hartmann6.toml", db="sqlite:///lab.db")
    todo = c.ask(2)                 # a pandas DataFrame: experiment_id and the parameters
    c.tell([{"experiment_id": int(todo.experiment_id[0]), "y": 1.23}, ...])
    c.add_data("earlier.csv")       # measurements made before, validated row by row
    c.run()                         # the unattended loop, as ``sdlab run`` runs it
    c.results(), c.best(), c.best_so_far_figure()

Every ``ask`` is recorded as a planner decision and its experiments exactly as the
controller records them (the same store functions, the same lifecycle), with the planner
rebuilt from what the store holds, so an ``ask`` by hand and a controller's make the same
decision from the same data. ``tell`` records each result as a completed step of its
experiment (kind ``by-hand``); ``add_data`` records earlier measurements as experiments of
origin ``imported`` and raises the campaign's budget by as many, so they do not use it up.
A campaign a controller is running can be opened (:meth:`Campaign.open`) to watch it:
``results()`` and ``progress()`` read the store afresh each time; ``ask`` and ``tell`` are
refused while a controller holds the campaign's lease.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import inspect, select
from sqlalchemy.orm import Session, sessionmaker

from controller import notebook_figures as figures
from controller.notebook_tables import (
    cell_value,
    is_missing,
    numeric_values,
    read_csv,
    table_records,
)
from controller.planning import build_planner
from controller.runner import RunOptions, absolute_db_url, lab_of, validate
from controller.runner import run as run_file
from controller.simproc import default_journal_dir
from controller.store import (
    add_decision,
    add_event,
    add_experiment,
    add_measurements,
    add_step,
    count_by_status,
    create_campaign,
    export_rows,
    get_campaign,
    make_engine,
    migrate,
    observations,
    pending_parameters,
    session_factory,
    set_campaign_status,
    set_experiment_status,
    set_step_status,
    transaction,
)
from controller.store.lease import lease_is_live, lease_of
from controller.store.queries import related_observations
from models.campaign import CampaignSpec
from models.campaign_file import campaign_toml, parse_spec
from models.errors import CampaignStateError, InvalidCampaignError, ParameterLimitError
from models.records import Measurement
from models.status import CampaignStatus, ExperimentStatus, StepStatus
from models.tables import CampaignRow, EventRow, ExperimentRow

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

__all__ = ["Campaign"]

_OPEN = (ExperimentStatus.QUEUED, ExperimentStatus.RUNNING)
_NUMBER_TYPES = ("continuous", "integer")


class Campaign:
    """One campaign in a store, driven from Python.

    Args:
        spec: The campaign: a :class:`~models.campaign.CampaignSpec`, or the same as a
            mapping (the campaign file's tables), validated with key paths.
        db: SQLAlchemy URL of the store (created and migrated if new).
        source: Where the spec came from (a file), for messages and :meth:`run`.

    Raises:
        InvalidCampaignError: If the spec is invalid, or a campaign of that name with other
            settings is already in the store.
    """

    def __init__(
        self,
        spec: CampaignSpec | Mapping[str, Any],
        db: str = "sqlite:///sdlab.db",
        *,
        source: str | Path | None = None,
    ) -> None:
        where = str(source) if source is not None else "<python>"
        self.spec = (
            spec if isinstance(spec, CampaignSpec) else parse_spec(dict(spec), CampaignSpec, where)
        )
        self.source = Path(source) if source is not None else None
        self.db = absolute_db_url(db)
        self._engine = make_engine(self.db)
        migrate(self._engine)
        self._sessions: sessionmaker[Session] = session_factory(self._engine)
        with transaction(self._sessions) as s:
            row = get_campaign(s, self.spec.campaign.name)
            if row is None:
                row = create_campaign(
                    s,
                    self.spec,
                    seed=self.spec.campaign.seed,
                    max_experiments=self.spec.budget.max_experiments,
                    source=where,
                    actor="python",
                )
            elif row.spec_hash != self.spec.spec_hash():
                raise InvalidCampaignError(
                    where,
                    [
                        (
                            "campaign.name",
                            f"a campaign named {row.name!r} with different settings is "
                            "already in the database; give this one another name",
                        )
                    ],
                )
            self.id = row.id
            self.name = row.name

    @classmethod
    def from_file(cls, path: str | Path, db: str = "sqlite:///sdlab.db") -> Campaign:
        """Open (or create) the campaign of a campaign file, validated as ``sdlab run`` does."""
        return cls(validate(Path(path), lab=lab_of(Path(path), db)), db, source=path)

    @classmethod
    def open(cls, name: str, db: str = "sqlite:///sdlab.db") -> Campaign:
        """Open a campaign already in the store (one a controller may be running).

        Raises:
            CampaignStateError: If there is no campaign of that name (yet: a controller
                that is starting may not have created it).
        """
        engine = make_engine(absolute_db_url(db))
        try:
            if not inspect(engine).has_table(CampaignRow.__tablename__):
                raise CampaignStateError(f"no campaign {name!r} in {db}: it has no sdlab tables")
            with transaction(session_factory(engine)) as s:
                row = get_campaign(s, name)
                if row is None:
                    raise CampaignStateError(f"no campaign {name!r} in {db}")
                spec = CampaignSpec.model_validate(row.spec)
                created = s.scalars(
                    select(EventRow)
                    .where(EventRow.campaign_id == row.id, EventRow.kind == "campaign.created")
                    .limit(1)
                ).first()
                source = (created.data or {}).get("source") if created is not None else None
        finally:
            engine.dispose()
        file = Path(source) if source and Path(source).is_file() else None
        return cls(spec, db, source=file)

    # ------------------------------------------------------------------ ask / tell

    def ask(self, n: int = 1) -> pd.DataFrame:
        """Propose ``n`` experiments, recorded as the controller records them.

        Returns:
            One row per experiment: ``experiment_id``, every parameter, ``origin`` and
            ``score`` (the planner's), in the planner's order.

        Raises:
            CampaignStateError: If a controller is running the campaign, or it is finished.
            PlannerError: If the planner cannot propose (see its message).
        """
        import pandas as pd

        with transaction(self._sessions) as s:
            row = self._writable(s)
            seed = row.seed
            history = observations(s, self.id, list(self.spec.objectives))
            names = self.spec.planner.options.get("related_campaigns", [])
            related = related_observations(s, names, list(self.spec.objectives))
            pending = pending_parameters(s, self.id)
        planner = build_planner(self.spec, seed)
        for task, told in related.items():
            planner.tell_related(task, told)
        planner.tell(history)
        decision = planner.ask(n, pending)
        rows: list[dict[str, Any]] = []
        with transaction(self._sessions) as s:
            camp = self._writable(s)
            if camp.status == CampaignStatus.CREATED:
                set_campaign_status(s, camp, CampaignStatus.RUNNING, actor="python")
            d = add_decision(s, self.id, decision)
            for i, prop in enumerate(decision.proposals):
                point = self.spec.space.validate_point(prop.parameters)
                exp = add_experiment(
                    s,
                    self.id,
                    point,
                    decision_id=d.id,
                    proposal_index=i,
                    origin=prop.origin,
                    score=prop.score,
                )
                try:
                    self.spec.space.check_constraints(point)
                except ParameterLimitError as exc:
                    set_experiment_status(s, exp, ExperimentStatus.ABANDONED, reason=str(exc))
                    continue
                set_experiment_status(s, exp, ExperimentStatus.QUEUED)
                rows.append(
                    {"experiment_id": exp.id, **point, "origin": prop.origin, "score": prop.score}
                )
        return pd.DataFrame(
            rows, columns=["experiment_id", *self.spec.space.names, "origin", "score"]
        )

    def tell(self, results: pd.DataFrame | Iterable[Mapping[str, Any]]) -> list[int]:
        """Record the results of experiments done by hand (or by another system).

        Args:
            results: Rows with ``experiment_id`` (from :meth:`ask`) and a value for each
                objective; other numeric columns are recorded as measurements too. A row
                whose objectives are all missing (or with ``failed`` true) fails its
                experiment (``reason`` says why, if given).

        Returns:
            The experiments told.

        Raises:
            InvalidCampaignError: Naming the row and column of a bad value
                (``rows[1].y``); nothing is recorded then.
        """
        rows = table_records(results)
        objectives = [o.name for o in self.spec.objectives]
        problems: list[tuple[str, str]] = []
        todo: list[tuple[int, dict[str, float], str | None]] = []
        with transaction(self._sessions) as s:
            self._writable(s)
            for r, rec in enumerate(rows):
                where = f"rows[{r}]"
                exp_id = rec.get("experiment_id")
                if isinstance(exp_id, float) and exp_id.is_integer():
                    exp_id = int(exp_id)
                exp = s.get(ExperimentRow, exp_id) if isinstance(exp_id, int) else None
                if exp is None or exp.campaign_id != self.id:
                    problems.append(
                        (f"{where}, column experiment_id", f"no experiment {exp_id!r} here")
                    )
                    continue
                if exp.status not in _OPEN:
                    problems.append(
                        (
                            f"{where}, column experiment_id",
                            f"experiment {exp_id} is {exp.status.value}",
                        )
                    )
                    continue
                values, bad = numeric_values(rec, {"experiment_id", "failed", "reason"}, objectives)
                problems += [(f"{where}.{c}", m) for c, m in bad]
                flag = cell_value(rec.get("failed"))
                told = any(o in values for o in objectives)
                failed = (not is_missing(flag) and bool(flag)) or not told
                reason = rec.get("reason") if isinstance(rec.get("reason"), str) else None
                why = (reason or "reported failed by hand") if failed else None
                todo.append((exp.id, {} if failed else values, why))
        if problems:
            raise InvalidCampaignError("results", problems)
        with transaction(self._sessions) as s:
            self._writable(s)
            for exp_id, values, reason in todo:
                exp = s.get_one(ExperimentRow, exp_id)
                self._record(s, exp, values, reason, "tell")
        return [t[0] for t in todo]

    def add_data(self, table: str | Path | pd.DataFrame | Iterable[Mapping[str, Any]]) -> list[int]:
        """Bring in earlier or out-of-design measurements (a CSV file, a DataFrame or rows
        as dicts).

        Each row needs a column for every parameter and at least one objective; other
        numeric columns become measurements. Rows are validated against the search space
        (bounds and constraints) before anything is written. The campaign's budget is raised
        by the number of rows, so imported experiments do not use it up. Repeated rows
        (replicates: the same conditions measured again) are kept, one experiment each, so
        the planner's model sees their spread as measurement noise. A CSV file's units row
        under its header is refused saying so (units belong in the column names).

        Returns:
            The new experiments' ids.

        Raises:
            InvalidCampaignError: Naming the row and column of every bad value
                (``rows[2].temperature_c``, counted from 0; the message gives a CSV file's
                line); nothing is recorded then.
        """
        import pandas as pd

        numeric = [p.name for p in self.spec.space.parameters if p.type in _NUMBER_TYPES]
        numeric += [o.name for o in self.spec.objectives]
        frame = read_csv(table, numeric) if isinstance(table, (str, Path)) else table
        if not isinstance(frame, pd.DataFrame):
            frame = pd.DataFrame(table_records(frame))
        source = str(table) if isinstance(table, (str, Path)) else "table"
        lines: list[int] = frame.attrs.get("lines", []) if isinstance(table, (str, Path)) else []
        space = self.spec.space
        objectives = [o.name for o in self.spec.objectives]
        missing = [n for n in space.names if n not in frame.columns]
        if missing:
            raise InvalidCampaignError(source, [("columns", f"no column for parameters {missing}")])
        if not any(o in frame.columns for o in objectives):
            raise InvalidCampaignError(
                source, [("columns", f"no column for objectives {objectives}")]
            )
        problems: list[tuple[str, str]] = []
        todo: list[tuple[dict[str, Any], dict[str, float]]] = []
        for i, rec in enumerate(table_records(frame)):
            where = f"rows[{i}]"
            line = f"line {lines[i]}: " if lines else ""
            point: dict[str, Any] = {}
            for name in space.names:
                try:
                    point.update(space.subset([name]).validate_point({name: cell_value(rec[name])}))
                except ParameterLimitError as exc:
                    problems.append((f"{where}.{name}", f"{line}{exc}"))
            if len(point) == len(space.names):
                for why in space.constraint_violations(point):
                    problems.append((where, f"{line}{why}"))
            values, bad = numeric_values(rec, set(space.names), objectives)
            problems += [(f"{where}.{c}", f"{line}{m}") for c, m in bad]
            if not bad and not any(o in values for o in objectives):
                problems.append((f"{where}.{objectives[0]}", f"{line}no objective value"))
            todo.append((point, values))
        if problems:
            raise InvalidCampaignError(source, problems)
        ids: list[int] = []
        with transaction(self._sessions) as s:
            row = self._writable(s)
            before = row.max_experiments
            row.max_experiments = before + len(todo)
            add_event(
                s,
                "campaign.budget",
                f"{len(todo)} experiments imported from {source}; budget raised from {before} "
                f"to {row.max_experiments} so that they do not use it up",
                campaign_id=self.id,
                actor="python",
                data={"from": before, "to": row.max_experiments, "imported": len(todo)},
            )
            for point, values in todo:
                exp = add_experiment(s, self.id, point, origin="imported")
                set_experiment_status(s, exp, ExperimentStatus.QUEUED)
                self._record(s, exp, values, None, "import")
                ids.append(exp.id)
        return ids

    def _record(
        self,
        s: Session,
        exp: ExperimentRow,
        values: Mapping[str, float],
        failure: str | None,
        action: str,
    ) -> None:
        """Record one result as a completed (or failed) ``by-hand`` step of ``exp``."""
        if exp.status == ExperimentStatus.QUEUED:
            set_experiment_status(s, exp, ExperimentStatus.RUNNING)
        attempt = 1 + len(exp.steps)
        step = add_step(
            s,
            exp,
            index=0,
            kind="by-hand",
            action=action,
            parameters=dict(exp.parameters),
            request_id=f"{self.name}-{action}-{exp.id}-{attempt}",
            attempt=attempt,
        )
        set_step_status(s, step, StepStatus.RUNNING, instrument="python")
        if failure is not None:
            set_step_status(s, step, StepStatus.FAILED, error=failure)
            set_experiment_status(s, exp, ExperimentStatus.FAILED, reason=failure)
            return
        add_measurements(s, step, [Measurement(name=k, value=v) for k, v in values.items()])
        set_step_status(s, step, StepStatus.COMPLETED)
        set_experiment_status(s, exp, ExperimentStatus.COMPLETED)

    def _writable(self, s: Session) -> CampaignRow:
        row = s.get_one(CampaignRow, self.id)
        held = lease_of(s, self.id)
        if held is not None and lease_is_live(held):
            raise CampaignStateError(
                f"campaign {self.name!r} is being run by a controller ({held.holder}): "
                "watch it with results() and progress(); ask and tell are for campaigns no "
                "controller runs"
            )
        if row.status in (CampaignStatus.ABORTED, CampaignStatus.FAILED):
            raise CampaignStateError(f"campaign {self.name!r} is {row.status.value}")
        return row

    # ------------------------------------------------------------------ the loop

    def run(
        self,
        *,
        budget: int | None = None,
        progress: bool = True,
        ray_address: str | None = None,
    ) -> pd.DataFrame:
        """Run the campaign unattended, as ``sdlab run`` does (same progress and summary).

        A campaign made in Python is first written as a campaign file (the instrument
        servers sdlab starts read their settings from one): ``<name>.toml`` beside the
        servers' journals (for a SQLite store ``.<db file>.sim/`` next to it, else
        ``.sdlab/sim/`` in the working directory). Relative paths in the spec (pool and
        table files) are read from the working directory, as ``sdlab run`` reads them.

        Args:
            budget: Run to this many experiments (default: the campaign's budget as the
                store holds it, imported rows included).
            progress: Show the progress bar.
            ray_address: Join this Ray cluster instead of starting a local instance.

        Returns:
            :meth:`results` afterwards.

        Raises:
            CampaignStateError: If a controller is running the campaign already.
            InvalidCampaignError: If the spec cannot be run (as ``sdlab run`` reports it).
        """
        with transaction(self._sessions) as s:
            self._writable(s)
            stored_budget = s.get_one(CampaignRow, self.id).max_experiments
        path = self.source if self.source is not None else self.write_file()
        opts = RunOptions(
            db_url=self.db,
            budget=budget if budget is not None else stored_budget,
            progress=progress,
            ray_address=ray_address,
        )
        code = run_file(path, opts)
        if code != 0:
            logger.warning("campaign %s: the run ended with exit code %d", self.name, code)
        return self.results()

    def write_file(self, path: str | Path | None = None) -> Path:
        """Write the campaign as a campaign file (``sdlab run`` and :meth:`run` read it).

        Args:
            path: Where (default: see :meth:`run`).

        Returns:
            The file written.
        """
        target = (
            Path(path)
            if path is not None
            else default_journal_dir(self.db, self.name).parent / f"{self.name}.toml"
        )
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(
            "# written by sdlab's Python API (controller.notebook.Campaign.write_file)\n"
            + campaign_toml(self.spec),
            encoding="utf-8",
        )
        return target

    # ------------------------------------------------------------------ results

    def progress(self) -> dict[str, Any]:
        """The campaign's status and its experiments counted by status (read afresh)."""
        with transaction(self._sessions) as s:
            row = s.get_one(CampaignRow, self.id)
            counts = {k.value: v for k, v in count_by_status(s, self.id).items()}
            return {"status": row.status.value, "budget": row.max_experiments, **counts}

    def results(self) -> pd.DataFrame:
        """Every experiment, one row each (the export's columns), read afresh."""
        import pandas as pd

        with transaction(self._sessions) as s:
            return pd.DataFrame(export_rows(s, self.name))

    def best(self) -> dict[str, Any] | None:
        """The completed experiment with the best value of the first objective (its
        ``experiment_id``, parameters and measured objectives), or ``None``."""
        obj = next(o for o in self.spec.objectives if not o.is_constraint)
        frame = self.results()
        column = f"obj.{obj.name}"
        if frame.empty or column not in frame:
            return None
        done = frame[(frame["status"] == "COMPLETED") & frame[column].notna()]
        if done.empty:
            return None
        utility = done[column].map(lambda v: obj.utility(float(v)))
        top = done.loc[utility.idxmax()]
        return {
            "experiment_id": int(top["id"]),
            **{n: top[f"param.{n}"] for n in self.spec.space.names},
            **{o.name: top.get(f"obj.{o.name}") for o in self.spec.objectives},
        }

    def best_so_far_figure(self, backend: figures.Backend = "plotly") -> Any:
        """The first objective's best value after each experiment.

        Args:
            backend: ``"plotly"`` (a plotly figure) or ``"matplotlib"`` (a
                ``matplotlib.figure.Figure``); both render in Jupyter.
        """
        return figures.best_so_far(self.spec, self.name, self.results(), backend)

    def parameter_figure(self, backend: figures.Backend = "plotly") -> Any:
        """Parallel coordinates of the completed experiments' parameters, coloured by the
        first objective (numeric parameters only); ``backend`` as for
        :meth:`best_so_far_figure`."""
        return figures.parameters(self.spec, self.name, self.results(), backend)

    def pareto_figure(self, backend: figures.Backend = "plotly") -> Any:
        """The first two objectives of completed experiments, the non-dominated ones joined
        (campaigns with two or more objectives); ``backend`` as for
        :meth:`best_so_far_figure`.

        Raises:
            CampaignStateError: If the campaign has fewer than two objectives.
        """
        return figures.pareto(self.spec, self.results(), backend)

    def close(self) -> None:
        """Close the database engine."""
        self._engine.dispose()
