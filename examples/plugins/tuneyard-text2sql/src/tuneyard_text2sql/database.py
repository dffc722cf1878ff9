"""The ``company`` SQLite database: built from code, deterministically, on first use.

Four tables with foreign keys (departments, employees, projects, assignments), filled from a
seeded ``random.Random``: 8 departments, 120 employees, 30 projects, about 190 assignments.
Nothing is downloaded and no data file ships with the package. The same seed and the same
SQLite library give a byte-identical file.

The default file lives in the user's cache (``$XDG_CACHE_HOME``, else ``~/.cache``, then
``tuneyard-text2sql/company-v1.sqlite``; the ``v1`` changes whenever the content would). It
is written to a temporary file in the same folder and moved into place with ``os.replace``
(atomic on POSIX and Windows), so two processes may build it at once and a reader never sees
a half-written file.
"""

from __future__ import annotations

import os
import random
import sqlite3
import tempfile
from pathlib import Path

from tuneyard.core.errors import DataError

NAME = "company"
VERSION = 1
SEED = 0
"""Seed of the default database; a part of its identity, like :data:`VERSION`."""

#: The schema, one ``CREATE TABLE`` per table, kept on one line each: SQLite stores this text
#: verbatim in ``sqlite_master``, and the prompt shows it, so short lines mean short prompts.
SCHEMA = (
    "CREATE TABLE departments (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, "
    "city TEXT NOT NULL, budget INTEGER NOT NULL)",
    "CREATE TABLE employees (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, "
    "title TEXT NOT NULL, salary INTEGER NOT NULL, hire_year INTEGER NOT NULL, "
    "department_id INTEGER NOT NULL REFERENCES departments(id), "
    "manager_id INTEGER REFERENCES employees(id))",
    "CREATE TABLE projects (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, "
    "status TEXT NOT NULL, start_year INTEGER NOT NULL, end_year INTEGER, "
    "department_id INTEGER NOT NULL REFERENCES departments(id))",
    "CREATE TABLE assignments (employee_id INTEGER NOT NULL REFERENCES employees(id), "
    "project_id INTEGER NOT NULL REFERENCES projects(id), role TEXT NOT NULL, "
    "hours INTEGER NOT NULL, PRIMARY KEY (employee_id, project_id))",
)
TABLES = tuple(statement.split()[2] for statement in SCHEMA)
"""The table names, in :data:`SCHEMA` order."""

DEPARTMENTS = ("Engineering", "Sales", "Marketing", "Finance", "Human Resources", "Research",
               "Support", "Operations")
CITIES = ("Boston", "Chicago", "Denver", "Seattle")
FIRST = ("Ada", "Ben", "Carla", "Dev", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jonas",
         "Kemi", "Liam", "Maya", "Nils", "Olga", "Pablo", "Quinn", "Rosa", "Sami", "Tara",
         "Umar", "Vera", "Wei", "Xena", "Yusuf", "Zoe")
LAST = ("Adams", "Brooks", "Chen", "Diaz", "Evans", "Fischer", "Garcia", "Hughes", "Ito",
        "Jensen", "Kowalski", "Lopez", "Morris", "Novak", "Okafor", "Patel", "Rossi", "Silva",
        "Tanaka", "Weber")
#: title → (lowest, highest) salary in dollars per year
TITLES = {"Engineer": (70_000, 140_000), "Analyst": (55_000, 100_000),
          "Designer": (55_000, 105_000), "Technician": (40_000, 75_000),
          "Consultant": (60_000, 120_000)}
PROJECTS = ("Apollo", "Borealis", "Cascade", "Delta", "Ember", "Falcon", "Granite", "Helix",
            "Iris", "Juniper", "Kestrel", "Lumen", "Meridian", "Nimbus", "Orion", "Pioneer",
            "Quasar", "Redwood", "Sierra", "Tundra", "Umbra", "Vertex", "Willow", "Xylo",
            "Yukon", "Zephyr", "Atlas", "Beacon", "Comet", "Drift")
STATUSES = ("active", "completed", "cancelled")
ROLES = ("developer", "reviewer", "tester")
N_EMPLOYEES = 120


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/tuneyard-text2sql``, or ``~/.cache/tuneyard-text2sql`` when unset."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tuneyard-text2sql"


def default_path() -> Path:
    """Where the default database lives: ``<cache_dir>/company-v1.sqlite``."""
    return cache_dir() / f"{NAME}-v{VERSION}.sqlite"


def ensure_database(path: str | Path | None = None) -> Path:
    """The database file at ``path`` (``None`` = :func:`default_path`), built there first if
    it does not exist yet.

    Returns:
        The absolute path of the file.

    Raises:
        OSError: the folder cannot be created or written.
    """
    path = Path(path).expanduser().absolute() if path is not None else default_path()
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        build_database(tmp, seed=SEED)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def build_database(path: str | Path, seed: int = SEED) -> None:
    """Create the tables of :data:`SCHEMA` in the (empty or new) file ``path`` and fill them
    from ``random.Random(seed)``.

    Content: every department has a director (title ``Director``, ``manager_id`` NULL) and
    ``Manager``\\ s who report to the director; everyone else reports to a manager of their
    department. Salaries are unique (so "the N highest-paid" has one answer); active projects
    have ``end_year`` NULL; every project has exactly one ``lead``.
    """
    rng = random.Random(seed)
    conn = sqlite3.connect(path)
    try:
        for statement in SCHEMA:
            conn.execute(statement)
        conn.executemany("INSERT INTO departments VALUES (?, ?, ?, ?)", _departments(rng))
        employees = _employees(rng)
        conn.executemany("INSERT INTO employees VALUES (?, ?, ?, ?, ?, ?, ?)", employees)
        projects = _projects(rng)
        conn.executemany("INSERT INTO projects VALUES (?, ?, ?, ?, ?, ?)", projects)
        conn.executemany("INSERT INTO assignments VALUES (?, ?, ?, ?)",
                         _assignments(rng, employees, projects))
        conn.commit()
    finally:
        conn.close()


def _departments(rng: random.Random) -> list[tuple]:
    budgets = rng.sample(range(300, 3000, 10), len(DEPARTMENTS))  # thousands of dollars
    cities = [CITIES[i % len(CITIES)] for i in range(len(DEPARTMENTS))]
    rng.shuffle(cities)
    return [(i + 1, name, city, budget * 1000)
            for i, (name, city, budget) in enumerate(zip(DEPARTMENTS, cities, budgets))]


def _employees(rng: random.Random) -> list[tuple]:
    """Rows ``(id, name, title, salary, hire_year, department_id, manager_id)``."""
    names = rng.sample([f"{f} {l}" for f in FIRST for l in LAST], N_EMPLOYEES)
    used: set[int] = set()

    def salary(low: int, high: int) -> int:
        while (value := rng.randrange(low, high, 250)) in used:
            pass
        used.add(value)
        return value

    rows: list[tuple] = []
    n_dept = len(DEPARTMENTS)
    # Directors first (ids 1..8), then two managers per department, then everyone else.
    for d in range(n_dept):
        rows.append((len(rows) + 1, names[len(rows)], "Director", salary(150_000, 220_000),
                     rng.randint(2005, 2015), d + 1, None))
    managers: dict[int, list[int]] = {d + 1: [] for d in range(n_dept)}
    for d in range(n_dept):
        for _ in range(2):
            rows.append((len(rows) + 1, names[len(rows)], "Manager", salary(110_000, 160_000),
                         rng.randint(2008, 2020), d + 1, d + 1))
            managers[d + 1].append(len(rows))
    while len(rows) < N_EMPLOYEES:
        dept = rng.randint(1, n_dept)
        title = rng.choice(list(TITLES))
        rows.append((len(rows) + 1, names[len(rows)], title, salary(*TITLES[title]),
                     rng.randint(2010, 2024), dept, rng.choice(managers[dept])))
    return rows


def _projects(rng: random.Random) -> list[tuple]:
    """Rows ``(id, name, status, start_year, end_year, department_id)``."""
    rows = []
    for i, name in enumerate(PROJECTS):
        status = rng.choices(STATUSES, weights=(5, 4, 1))[0]
        start = rng.randint(2015, 2024)
        end = None if status == "active" else min(2025, start + rng.randint(0, 3))
        rows.append((i + 1, name, status, start, end, rng.randint(1, len(DEPARTMENTS))))
    return rows


def _assignments(rng: random.Random, employees: list[tuple], projects: list[tuple]
                 ) -> list[tuple]:
    """Rows ``(employee_id, project_id, role, hours)``: 3 to 10 people per project, one lead,
    mostly from the project's department."""
    rows = []
    for project_id, *_, department_id in projects:
        own = [e[0] for e in employees if e[5] == department_id]
        other = [e[0] for e in employees if e[5] != department_id]
        size = rng.randint(3, 10)
        n_own = min(len(own), rng.randint(2, size))
        people = rng.sample(own, n_own) + rng.sample(other, size - n_own)
        for k, employee_id in enumerate(people):
            role = "lead" if k == 0 else rng.choice(ROLES)
            rows.append((employee_id, project_id, role, rng.randrange(10, 400, 5)))
    return rows


def connect_readonly(path: str | Path) -> sqlite3.Connection:
    """Open ``path`` read-only (URI ``file:...?mode=ro``); the file must exist.

    Raises:
        sqlite3.OperationalError: the file cannot be opened.
    """
    uri = Path(path).absolute().as_uri() + "?mode=ro"
    return sqlite3.connect(uri, uri=True)


def schema_sql(conn: sqlite3.Connection) -> str:
    """The ``CREATE TABLE`` statements of the database, read from ``sqlite_master`` in
    creation order, each ending with ``;``, one per line."""
    rows = conn.execute(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
        "ORDER BY rowid"
    ).fetchall()
    return "\n".join(f"{sql};" for (sql,) in rows)


def open_database(option: str | None, *, who: str, build: bool) -> tuple[Path, sqlite3.Connection]:
    """Find the database a component's ``database`` option names and open it read-only.

    Args:
        option: the option's value: a file path, or ``None`` for the default database, which
            is built on first use.
        who: the component's name, for error messages.
        build: build the database at ``option`` when that file does not exist (the dataset
            source does; the evaluator needs the file its dataset was made from).

    Returns:
        The absolute path and a read-only connection.

    Raises:
        DataError: the file is missing (and ``build`` is false), cannot be built or opened, or
            lacks a table of :data:`TABLES`; the message names the option and the path.
    """
    path = default_path() if option is None else Path(option).expanduser().absolute()
    if not build and option is not None and not path.is_file():
        raise DataError(
            f"{who}: database {path} not found (option 'database'); give the file the text2sql "
            "dataset source used, or leave 'database' unset for the default one"
        )
    try:
        ensure_database(path)
        conn = connect_readonly(path)
        present = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except (OSError, sqlite3.Error) as exc:
        raise DataError(f"{who}: cannot build or open database {path} (option 'database'): "
                        f"{exc}") from None
    missing = [t for t in TABLES if t not in present]
    if missing:
        conn.close()
        raise DataError(f"{who}: {path} is not a text2sql '{NAME}' database: no table "
                        f"{', '.join(missing)} (option 'database')")
    return path, conn
