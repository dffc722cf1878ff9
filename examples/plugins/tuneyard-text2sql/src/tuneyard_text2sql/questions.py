"""Question → SQL pairs over the ``company`` database, generated from templates.

Each template fills its slots (a department, a city, a year, a salary threshold, a project, an
employee, a count N…) with values read from the database itself, and words the question in one
of a few phrasings picked by a seeded ``random.Random``. The templates cover counts, filters,
joins over the foreign keys, aggregates, ``NULL`` tests, subqueries, ``GROUP BY`` (with and
without ``HAVING``) and ``ORDER BY … LIMIT``. Pairs whose gold query returns no row are
dropped (any empty answer would match them), and so are repeated questions: 486 distinct
pairs remain on the default database.

Every gold query is written in one style (upper-case keywords, table aliases, a final ``;``) so
a model learns one convention. ``ORDER BY`` appears only where the question asks for an order;
the evaluator then compares rows in order.
"""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass

Pair = tuple[str, str]
"""``(question, gold SQL)``."""

SEED = 0
"""Seed of the phrasings and of the employees picked for per-person questions; generation is
deterministic, the dataset source's own ``seed`` only draws its ``limit`` sample."""
N_PEOPLE = 40
"""Employees that get per-person questions (each template draws its own sample)."""


def q(value: str) -> str:
    """``value`` as an SQL string literal (single quotes doubled)."""
    return "'" + value.replace("'", "''") + "'"


@dataclass
class Facts:
    """The slot values, read from the database."""

    departments: list[str]
    cities: list[str]
    titles: list[str]
    statuses: list[str]
    projects: list[str]
    employees: list[str]
    managed: list[str]  # employees who have a manager
    hire_years: list[int]
    start_years: list[int]

    @classmethod
    def read(cls, conn: sqlite3.Connection) -> Facts:
        def col(sql: str) -> list:
            return [r[0] for r in conn.execute(sql)]

        return cls(
            departments=col("SELECT name FROM departments ORDER BY id"),
            cities=col("SELECT DISTINCT city FROM departments ORDER BY city"),
            titles=col("SELECT DISTINCT title FROM employees ORDER BY title"),
            statuses=col("SELECT DISTINCT status FROM projects ORDER BY status"),
            projects=col("SELECT name FROM projects ORDER BY id"),
            employees=col("SELECT name FROM employees ORDER BY id"),
            managed=col("SELECT name FROM employees WHERE manager_id IS NOT NULL ORDER BY id"),
            hire_years=col("SELECT DISTINCT hire_year FROM employees ORDER BY hire_year"),
            start_years=col("SELECT DISTINCT start_year FROM projects ORDER BY start_year"),
        )


Template = Callable[[Facts, random.Random], Iterator[Pair]]
TEMPLATES: list[Template] = []


def template(fn: Template) -> Template:
    TEMPLATES.append(fn)
    return fn


def a(noun: str) -> str:
    """``noun`` with its indefinite article: ``a manager``, ``an engineer``."""
    return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}"


def say(rng: random.Random, *phrasings: str) -> str:
    return rng.choice(phrasings)


EMP_DEPT = "FROM employees AS e JOIN departments AS d ON e.department_id = d.id"
ON_PROJECT = ("FROM employees AS e JOIN assignments AS a ON a.employee_id = e.id "
              "JOIN projects AS p ON a.project_id = p.id")


# -- counts and filters on one table -------------------------------------------------------
@template
def employees_in_department(f: Facts, rng: random.Random) -> Iterator[Pair]:
    for dept in f.departments:
        yield (say(rng, f"How many employees work in the {dept} department?",
                   f"Count the employees of the {dept} department."),
               f"SELECT COUNT(*) {EMP_DEPT} WHERE d.name = {q(dept)};")


@template
def earning_more_than(f: Facts, rng: random.Random) -> Iterator[Pair]:
    for amount in range(40_000, 200_001, 10_000):
        yield (say(rng, f"How many employees earn more than {amount} dollars?",
                   f"How many employees have a salary above {amount}?"),
               f"SELECT COUNT(*) FROM employees WHERE salary > {amount};")


@template
def hired_after(f: Facts, rng: random.Random) -> Iterator[Pair]:
    for year in f.hire_years[:-1]:
        yield (say(rng, f"List the names of employees hired after {year}.",
                   f"Which employees were hired after {year}?"),
               f"SELECT name FROM employees WHERE hire_year > {year};")


@template
def hired_in(f: Facts, rng: random.Random) -> Iterator[Pair]:
    for year in f.hire_years:
        yield (say(rng, f"How many employees were hired in {year}?",
                   f"How many people joined the company in {year}?"),
               f"SELECT COUNT(*) FROM employees WHERE hire_year = {year};")


@template
def no_manager(f: Facts, rng: random.Random) -> Iterator[Pair]:
    yield ("List the names of employees who have no manager.",
           "SELECT name FROM employees WHERE manager_id IS NULL;")


@template
def departments_in_city(f: Facts, rng: random.Random) -> Iterator[Pair]:
    for city in f.cities:
        yield (say(rng, f"Which departments are located in {city}?",
                   f"List the departments based in {city}."),
               f"SELECT name FROM departments WHERE city = {q(city)};")
        yield (f"What is the total budget of the departments in {city}?",
               f"SELECT SUM(budget) FROM departments WHERE city = {q(city)};")


@template
def open_projects(f: Facts, rng: random.Random) -> Iterator[Pair]:
    yield ("Which projects have not ended yet?",
           "SELECT name FROM projects WHERE end_year IS NULL;")
    for year in f.start_years:
        yield (say(rng, f"List the projects that started in {year} or later.",
                   f"Which projects started in {year} or after?"),
               f"SELECT name FROM projects WHERE start_year >= {year};")
        yield (f"Which projects ended in {year}?",
               f"SELECT name FROM projects WHERE end_year = {year};")


# -- joins ---------------------------------------------------------------------------------
@template
def title_in_department(f: Facts, rng: random.Random) -> Iterator[Pair]:
    for dept in f.departments:
        for title in f.titles:
            yield (say(rng, f"List the names of the {title.lower()}s in the {dept} department.",
                       f"Who works as {a(title.lower())} in the {dept} department?"),
                   f"SELECT e.name {EMP_DEPT} WHERE d.name = {q(dept)} "
                   f"AND e.title = {q(title)};")


@template
def department_earning_more(f: Facts, rng: random.Random) -> Iterator[Pair]:
    for dept in f.departments:
        for amount in (60_000, 90_000, 120_000):
            yield (f"How many employees in the {dept} department earn more than {amount}?",
                   f"SELECT COUNT(*) {EMP_DEPT} WHERE d.name = {q(dept)} "
                   f"AND e.salary > {amount};")


@template
def department_projects(f: Facts, rng: random.Random) -> Iterator[Pair]:
    for dept in f.departments:
        for status in f.statuses:
            yield (say(rng, f"List the {status} projects of the {dept} department.",
                       f"Which projects of the {dept} department are {status}?"),
                   "SELECT p.name FROM projects AS p JOIN departments AS d "
                   f"ON p.department_id = d.id WHERE d.name = {q(dept)} "
                   f"AND p.status = {q(status)};")
        yield (f"How many projects does the {dept} department run?",
               "SELECT COUNT(*) FROM projects AS p JOIN departments AS d "
               f"ON p.department_id = d.id WHERE d.name = {q(dept)};")


@template
def project_members(f: Facts, rng: random.Random) -> Iterator[Pair]:
    for project in f.projects:
        yield (say(rng, f"Which employees work on the {project} project?",
                   f"List the names of the people assigned to project {project}."),
               f"SELECT e.name {ON_PROJECT} WHERE p.name = {q(project)};")
        yield (say(rng, f"How many hours in total are logged on the {project} project?",
                   f"What is the total number of hours spent on project {project}?"),
               "SELECT SUM(a.hours) FROM assignments AS a JOIN projects AS p "
               f"ON a.project_id = p.id WHERE p.name = {q(project)};")
        yield (say(rng, f"Who leads the {project} project?",
                   f"Name the lead of project {project}."),
               f"SELECT e.name {ON_PROJECT} WHERE p.name = {q(project)} AND a.role = 'lead';")


@template
def person(f: Facts, rng: random.Random) -> Iterator[Pair]:
    for name in rng.sample(f.employees, N_PEOPLE):
        yield (say(rng, f"Which department does {name} work in?",
                   f"What is the name of {name}'s department?"),
               f"SELECT d.name {EMP_DEPT} WHERE e.name = {q(name)};")
    for name in rng.sample(f.employees, N_PEOPLE):
        yield (say(rng, f"How many projects is {name} assigned to?",
                   f"On how many projects does {name} work?"),
               "SELECT COUNT(*) FROM assignments AS a JOIN employees AS e "
               f"ON a.employee_id = e.id WHERE e.name = {q(name)};")
    for name in rng.sample(f.managed, N_PEOPLE):
        yield (say(rng, f"Who is the manager of {name}?", f"Who does {name} report to?"),
               "SELECT m.name FROM employees AS e JOIN employees AS m ON e.manager_id = m.id "
               f"WHERE e.name = {q(name)};")


# -- aggregates, subqueries, GROUP BY ------------------------------------------------------
@template
def salary_stats(f: Facts, rng: random.Random) -> Iterator[Pair]:
    for dept in f.departments:
        yield (f"What is the average salary in the {dept} department?",
               f"SELECT AVG(e.salary) {EMP_DEPT} WHERE d.name = {q(dept)};")
        yield (f"Which employees of the {dept} department earn more than the department's "
               "average salary?",
               f"SELECT e.name {EMP_DEPT} WHERE d.name = {q(dept)} AND e.salary > "
               f"(SELECT AVG(e2.salary) FROM employees AS e2 WHERE e2.department_id = d.id);")
    for title in f.titles:
        for word, fn in (("highest", "MAX"), ("lowest", "MIN")):
            yield (f"What is the {word} salary of {a(title.lower())}?",
                   f"SELECT {fn}(salary) FROM employees WHERE title = {q(title)};")


@template
def unassigned(f: Facts, rng: random.Random) -> Iterator[Pair]:
    yield ("Which employees are not assigned to any project?",
           "SELECT name FROM employees WHERE id NOT IN (SELECT employee_id FROM assignments);")


@template
def group_by(f: Facts, rng: random.Random) -> Iterator[Pair]:
    yield ("How many employees does each department have?",
           f"SELECT d.name, COUNT(*) {EMP_DEPT} GROUP BY d.name;")
    yield ("What is the average salary for each job title?",
           "SELECT title, AVG(salary) FROM employees GROUP BY title;")
    yield ("How many projects are there in each status?",
           "SELECT status, COUNT(*) FROM projects GROUP BY status;")
    yield ("How many employees work in each city?",
           f"SELECT d.city, COUNT(*) {EMP_DEPT} GROUP BY d.city;")
    yield ("What is the total number of hours logged for each role?",
           "SELECT role, SUM(hours) FROM assignments GROUP BY role;")
    yield ("For each project, how many people are assigned to it?",
           "SELECT p.name, COUNT(*) FROM projects AS p JOIN assignments AS a "
           "ON a.project_id = p.id GROUP BY p.name;")
    for k in (10, 12, 14, 16, 18):
        yield (say(rng, f"Which departments have more than {k} employees?",
                   f"List the departments with over {k} employees."),
               f"SELECT d.name {EMP_DEPT} GROUP BY d.name HAVING COUNT(*) > {k};")
    for k in (5, 6, 7, 8):
        yield (f"Which projects have more than {k} people assigned?",
               "SELECT p.name FROM projects AS p JOIN assignments AS a ON a.project_id = p.id "
               f"GROUP BY p.name HAVING COUNT(*) > {k};")


# -- ORDER BY … LIMIT ----------------------------------------------------------------------
@template
def ordered(f: Facts, rng: random.Random) -> Iterator[Pair]:
    for dept in f.departments:
        for n in (3, 5):
            yield (say(rng, f"Who are the {n} highest-paid employees in the {dept} department?",
                       f"List the {n} best-paid people of the {dept} department, highest "
                       "salary first."),
                   f"SELECT e.name {EMP_DEPT} WHERE d.name = {q(dept)} "
                   f"ORDER BY e.salary DESC LIMIT {n};")
        yield (f"List the employees of the {dept} department from the highest salary to "
               "the lowest.",
               f"SELECT e.name {EMP_DEPT} WHERE d.name = {q(dept)} ORDER BY e.salary DESC;")
        yield (f"Who is the lowest-paid employee of the {dept} department?",
               f"SELECT e.name {EMP_DEPT} WHERE d.name = {q(dept)} "
               "ORDER BY e.salary ASC LIMIT 1;")
    for n in (1, 2, 3, 4, 5):
        yield (say(rng, f"List the {n} departments with the largest budgets.",
                   f"Which {n} departments have the biggest budgets, largest first?"),
               f"SELECT name FROM departments ORDER BY budget DESC LIMIT {n};")
    for n in (3, 5, 10):
        yield (f"Who are the {n} highest-paid employees of the company?",
               f"SELECT name FROM employees ORDER BY salary DESC LIMIT {n};")


def generate_pairs(conn: sqlite3.Connection) -> list[Pair]:
    """Every pair of every template, in template order, repeated questions and pairs whose
    gold query returns no row left out.

    Args:
        conn: a connection to a ``company`` database (read-only is enough).

    Raises:
        sqlite3.Error: the database lacks a table or column the templates use.
    """
    rng = random.Random(SEED)
    facts = Facts.read(conn)
    pairs: dict[str, str] = {}
    for make in TEMPLATES:
        for question, sql in make(facts, rng):
            if question not in pairs and conn.execute(sql).fetchone() is not None:
                pairs[question] = sql
    return list(pairs.items())
