"""``sdlab run``: create or resume a campaign, start its simulators, run it on Ray.

The runner is the entry point's side of a campaign run: it validates the file (before
anything is written), creates the campaign in the store or finds it again (same name:
resume), starts the simulated instrument servers the campaign names, starts the campaign
actor on Ray, shows progress, and prints the summary. Killing it at any moment loses
nothing: running the same command again resumes from the store.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import ray
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import select
from sqlalchemy.orm import Session

from controller.actors import ensure_ray, start_campaign_actor
from controller.loop import ControllerOptions
from controller.planning import build_planner
from controller.report import render_groups, render_summary, summarize
from controller.safety import SafetyGate
from controller.simproc import SimulatorProcesses, default_journal_dir
from controller.store import (
    add_event,
    count_by_status,
    create_campaign,
    get_campaign,
    make_engine,
    migrate,
    session_factory,
    set_campaign_status,
    transaction,
)
from controller.store.lab import get_lab
from controller.store.lease import LeaseHeldError, lease_is_live, lease_of
from controller.store.queries import cost_spent, related_observations
from instruments.driver import InstrumentDescription
from instruments.gateway import build_drivers
from instruments.security import CurveClientKeys
from models.campaign import CampaignSpec
from models.campaign_file import load_campaign, read_toml
from models.errors import (  # the exit statuses live there, so the CLI imports no Ray
    EXIT_FAILED,
    EXIT_OK,
    CampaignStateError,
    InvalidCampaignError,
    LinkSecurityError,
    Problem,
    RegistryError,
    SdlabError,
)
from models.gateway import GatewayFile, hosted_entries
from models.lab import LabSpec
from models.status import CampaignStatus, ExperimentStatus
from models.tables import CampaignRow, EventRow

logger = logging.getLogger(__name__)


@dataclass
class RunOptions:
    """What ``sdlab run`` was asked for.

    Attributes:
        db_url: SQLAlchemy URL of the store.
        budget: Overrides ``budget.max_experiments``.
        seed: Overrides ``campaign.seed`` for a new campaign.
        progress: Show a progress bar.
        ray_address: Join this Ray cluster instead of starting a local instance.
        journal_dir: Where hosted servers keep their journals (default: beside the db).
        controller: Controller settings.
        simulate: Run every instrument that names a ``driver`` on its driver's simulated
            backend (a dry run of the code that will drive the hardware).
    """

    db_url: str = "sqlite:///sdlab.db"
    budget: int | None = None
    seed: int | None = None
    progress: bool = True
    ray_address: str | None = None
    journal_dir: Path | None = None
    controller: ControllerOptions | None = None
    simulate: bool = False


def absolute_db_url(url: str) -> str:
    """``url`` with a relative SQLite file path made absolute (other URLs unchanged)."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/"):
        rest = url[len(prefix) :]
        if rest and rest != ":memory:" and not rest.startswith("file:"):
            path, sep, query = rest.partition("?")
            return f"{prefix}{Path(path).resolve()}{sep}{query}"
    return url


def validate(
    path: Path, seed: int | None = None, simulate: bool = False, lab: LabSpec | None = None
) -> CampaignSpec:
    """Load a campaign file and check that its planner can be built, its CURVE key files
    read, the drivers it hosts built from their options, and that its simulated
    instruments can run its workflow.

    Args:
        path: The campaign file.
        seed: Overrides its seed.
        simulate: Run drivers on their simulated backends.
        lab: The lab its ``[lab]`` table names (see :func:`lab_of`).

    Raises:
        InvalidCampaignError: For any problem, with the key path.
    """
    spec = load_campaign(path, lab)
    _check_drivers(spec, str(path), simulate)
    keys: list[tuple[str, str]] = []
    for i, inst in enumerate(spec.instruments):
        try:
            CurveClientKeys.for_instrument(inst)
        except LinkSecurityError as exc:
            keys.append((f"instruments[{i}].{exc.key or 'curve'}", str(exc)))
    if keys:
        raise InvalidCampaignError(str(path), keys)
    simulated = simulated_workflow_problems(spec)
    if simulated:
        raise InvalidCampaignError(str(path), simulated)
    try:
        build_planner(spec, seed if seed is not None else spec.campaign.seed)
    except RegistryError as exc:
        raise InvalidCampaignError(str(path), [("planner.name", str(exc))]) from exc
    except InvalidCampaignError as exc:
        raise InvalidCampaignError(str(path), exc.problems) from exc
    except SdlabError as exc:
        raise InvalidCampaignError(str(path), [("planner", str(exc))]) from exc
    return spec


def lab_of(path: Path, db_url: str) -> LabSpec | None:
    """The lab a campaign file's ``[lab]`` table names, as recorded in the store.

    Returns:
        ``None`` if the file names no lab, or the store does not have it (loading the file
        then reports ``lab.name``).

    Raises:
        InvalidCampaignError: If the file cannot be read or is not TOML.
    """
    table = read_toml(path).get("lab")
    name = table.get("name") if isinstance(table, dict) else None
    if not isinstance(name, str):
        return None
    engine = make_engine(db_url)
    try:
        migrate(engine)
        with transaction(session_factory(engine), read_only=True) as s:
            found = get_lab(s, name)
    finally:
        engine.dispose()
    return None if found is None else found[1]


def simulated_workflow_problems(spec: CampaignSpec) -> list[Problem]:
    """Check the workflow against what the campaign's simulated instruments will declare.

    A simulated instrument's ``describe`` is known before any server starts: its driver is
    built here (and dropped) and the workflow checked against it as the controller checks
    it at connect time (:class:`~controller.safety.SafetyGate`), so a campaign that could
    never run is refused before anything is written.

    Returns:
        The problems found, with their key paths; a driver that cannot be built reports
        under ``instruments[i].simulated``.
    """
    if not any(inst.simulator is not None for inst in spec.instruments):
        return []
    from sim.drivers import make_driver  # only a campaign with simulated instruments needs it

    problems: list[Problem] = []
    descriptions: dict[str, InstrumentDescription] = {}
    for i, inst in enumerate(spec.instruments):
        if inst.simulator is None:
            continue
        try:
            descriptions[inst.name] = make_driver(inst.name, inst.simulator).describe()
        except InvalidCampaignError as exc:
            problems += [p.under("instruments", i, "simulated") for p in exc.problems]
    if problems:
        return problems
    try:
        SafetyGate(spec, descriptions)
    except InvalidCampaignError as exc:
        return [p for p in exc.problems if not _unmeasured_objective(p, spec, descriptions)]
    return []


def _unmeasured_objective(
    problem: Problem, spec: CampaignSpec, descriptions: dict[str, InstrumentDescription]
) -> bool:
    """Whether ``problem`` is an objective no simulated action measures while instruments
    that are not simulated may still measure it (they are checked when they connect)."""
    return problem.path[:1] == ("objectives",) and len(descriptions) < len(spec.instruments)


def _check_drivers(spec: CampaignSpec, source: str, simulate: bool) -> None:
    """Build (without connecting) every driver the campaign's local gateway will host.

    Simulator tables are left to the simulator process, which reports them the same way.
    """
    entries = [e for e in hosted_entries(list(spec.instruments)) if e.spec.driver is not None]
    if entries:
        build_drivers(GatewayFile(source=source, entries=entries), simulate=simulate)


def _prepare(spec: CampaignSpec, path: Path, opts: RunOptions, console: Console) -> str | None:
    """Create or find the campaign. Returns ``None`` when there is nothing to do."""
    engine = make_engine(opts.db_url)
    try:
        migrate(engine)
        factory = session_factory(engine)
        budget = opts.budget or spec.budget.max_experiments
        with transaction(factory) as s:
            try:
                related_observations(
                    s, spec.planner.options.get("related_campaigns", []), spec.objectives
                )
            except InvalidCampaignError as exc:
                raise InvalidCampaignError(str(path), exc.problems) from exc
            row = get_campaign(s, spec.campaign.name)
            if row is None:
                seed = opts.seed if opts.seed is not None else spec.campaign.seed
                row = create_campaign(
                    s, spec, seed=seed, max_experiments=budget, source=str(path), actor="cli"
                )
                return row.name
            if row.spec_hash != spec.spec_hash():
                raise InvalidCampaignError(
                    str(path),
                    [
                        (
                            "campaign.name",
                            f"a campaign named {row.name!r} with different settings is already "
                            "in the database; give this one another name",
                        )
                    ],
                )
            held = lease_of(s, row.id)
            if held is not None and lease_is_live(held):
                raise LeaseHeldError(row.id, held)
            if opts.seed is not None and opts.seed != row.seed:
                console.print(f"[yellow]campaign keeps its original seed {row.seed}[/]")
            completed = count_by_status(s, row.id).get(ExperimentStatus.COMPLETED, 0)
            if budget != row.max_experiments:
                add_event(
                    s,
                    "campaign.budget",
                    f"budget changed from {row.max_experiments} to {budget}",
                    campaign_id=row.id,
                    data={"from": row.max_experiments, "to": budget},
                    actor="cli",
                )
                row.max_experiments = budget
            if row.status == CampaignStatus.ABORTED:
                console.print(f"campaign {row.name!r} was aborted; nothing to do")
                return None
            spent_out = _cost_budget_spent(s, row, spec.budget.max_cost)
            if spent_out is not None:
                console.print(
                    f"campaign {row.name!r} is finished: it reached its cost budget "
                    f"({spent_out}; raise budget.max_cost to continue it)"
                )
                return None
            if completed >= budget:
                if row.status != CampaignStatus.COMPLETED:
                    if row.status == CampaignStatus.CREATED:
                        set_campaign_status(s, row, CampaignStatus.RUNNING, actor="cli")
                    set_campaign_status(s, row, CampaignStatus.COMPLETED, actor="cli")
                console.print(
                    f"campaign {row.name!r} is finished: {completed} of {budget} experiments "
                    "completed (raise --budget to continue it)"
                )
                return None
            console.print(
                f"resuming campaign {row.name!r}: {completed} of {budget} experiments completed"
            )
            return row.name
    finally:
        engine.dispose()


def _cost_budget_spent(s: Session, row: CampaignRow, max_cost: float | None) -> str | None:
    """Why a campaign that ended on its cost budget is still finished, if it is.

    A campaign the controller completed because its next experiment would have passed
    ``budget.max_cost`` is finished for as long as ``max_cost`` stays what it was then;
    starting it again would only abandon one more proposal. ``None``: it may run (no cost
    budget, not completed on it, or the budget was raised since).
    """
    if max_cost is None or row.status != CampaignStatus.COMPLETED:
        return None
    last = s.scalars(
        select(EventRow)
        .where(EventRow.campaign_id == row.id, EventRow.kind == "campaign.cost_budget")
        .order_by(EventRow.id.desc())
        .limit(1)
    ).first()
    if last is None or float((last.data or {}).get("max_cost", -1.0)) < max_cost:
        return None
    return f"{cost_spent(s, row.id):g} of {max_cost:g} spent"


def run(path: Path, opts: RunOptions, console: Console | None = None) -> int:
    """Run (or resume) the campaign in ``path`` to its budget.

    Returns:
        The process exit code: 0 budget reached (or already finished), 1 otherwise.

    Raises:
        InvalidCampaignError: For an invalid file (the caller exits 2). Nothing is written.
        LeaseHeldError: If another controller is running the campaign (the caller exits 1).
    """
    console = console or Console()
    spec = validate(path, opts.seed, opts.simulate, lab_of(path, opts.db_url))
    # The campaign actor runs in a Ray worker whose working directory is not ours.
    opts = replace(opts, db_url=absolute_db_url(opts.db_url))
    name = _prepare(spec, path, opts, console)
    if name is None:
        _print_summary(opts.db_url, spec.campaign.name, console, None)
        return EXIT_OK
    sims: SimulatorProcesses | None = None
    started_ray = False
    t0 = time.monotonic()
    try:
        endpoints: dict[str, str] = {}
        if any(i.hosted for i in spec.instruments):
            journal = opts.journal_dir or default_journal_dir(opts.db_url, spec.campaign.name)
            sims = SimulatorProcesses(spec, path.resolve(), journal, simulate=opts.simulate)
            sims.spawn()  # before Ray starts any thread; they start up while Ray does
        started_ray = not ray.is_initialized()
        ensure_ray(opts.ray_address)
        if sims is not None:
            endpoints = sims.wait_ready()
        actor = start_campaign_actor(
            opts.db_url, name, endpoints, opts.controller or ControllerOptions()
        )
        result = _follow(actor, opts.progress, console)
    except KeyboardInterrupt:
        console.print(
            "[yellow]interrupted[/]: everything sent is recorded; run the same command again "
            "to resume"
        )
        return EXIT_FAILED
    finally:
        if started_ray:
            ray.shutdown()
        if sims is not None:
            sims.stop()
    _print_summary(opts.db_url, name, console, time.monotonic() - t0)
    status = result.get("status")
    if status == CampaignStatus.COMPLETED.value:
        return EXIT_OK
    console.print(f"[red]campaign ended {status}[/]: {result.get('stop_reason')}")
    return EXIT_FAILED


def _follow(actor: Any, show: bool, console: Console) -> dict[str, Any]:
    ref = actor.run.remote()
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        console=console,
        disable=not show,
        transient=False,
    )
    with progress:
        task = progress.add_task("experiments", total=None, detail="connecting")
        while True:
            done, _ = ray.wait([ref], timeout=0.25)
            if done:
                break
            try:
                p = ray.get(actor.progress.remote(), timeout=5)
            except ray.exceptions.GetTimeoutError:
                continue
            except ray.exceptions.RayActorError:
                break
            progress.update(
                task,
                total=p["budget"],
                completed=p["completed"],
                detail=(
                    "PAUSED: resume it from the dashboard"
                    if p["paused"]
                    else f"{p['in_flight']} running, {p['failed']} failed"
                ),
            )
        try:
            result: dict[str, Any] = ray.get(ref)
        except ray.exceptions.RayTaskError as exc:
            cause = exc.cause if isinstance(exc.cause, BaseException) else exc
            raise cause from None
        except ray.exceptions.RayError as exc:  # the actor's process died
            raise CampaignStateError(
                f"the campaign controller died ({type(exc).__name__}); everything it sent is "
                "recorded: run the same command again to resume"
            ) from exc
        progress.update(
            task,
            total=result["budget"],
            completed=result["completed"],
            detail=f"{result['failed']} failed",
        )
    return result


def _print_summary(db_url: str, name: str, console: Console, seconds: float | None) -> None:
    engine = make_engine(db_url)
    try:
        with transaction(session_factory(engine)) as s:
            summary = summarize(s, name, db_url, seconds)
    finally:
        engine.dispose()
    if summary is not None:
        console.print(render_summary(summary))
        groups = render_groups(summary)
        if groups is not None:
            console.print(groups)
