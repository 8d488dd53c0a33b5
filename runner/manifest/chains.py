"""Chains: a file field of a job's input may name another job's output instead of a file.

``job:<id>`` is that job's first output, ``job:<id>#<k>`` its k-th (from 1): a still made by an image
model feeds an image-to-video job, a clip feeds the next shot's reference ``video``. Reading a manifest,
a reference is a promise, checked as far as it can be before anything is paid for: the job it names
exists, no chain loops back on itself, the model of that job can produce that many outputs, and of a
kind the field takes (an image field is not fed a video). The input is checked against its model's
schema with each reference standing in as a URL (:func:`with_placeholders`), so every other rule still
applies.

A reference is *resolved* only when the run is about to send the job: each one becomes the URL RunComfy
returned for that output, exactly (RunComfy fetches it; nothing is uploaded), see :func:`resolved`.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

from ..catalog.models import Catalog, ModelSpec
from ..catalog.schema import suggest
from .job import PREFIX, InputPath, Job, OutputRef, fingerprint
from .validate import InputChecker, InputSource, ProblemLog

_REF = re.compile(r"job:([A-Za-z0-9][A-Za-z0-9._-]{0,127})(?:#([1-9][0-9]{0,5}))?")
# What a reference stands in as while the input is checked: a URL as the schema's file fields want one.
_PLACEHOLDER = "https://chained.invalid/{job}/{index}"
DEFAULT_OUTPUT_KIND = "video"  # the seed models (Kling O3) make one video per request


def is_ref(value: Any) -> bool:
    """Whether a value is written as a reference to another job's output."""
    return isinstance(value, str) and value.startswith(PREFIX)


def find_refs(
    input: Mapping[str, Any], file_fields: Mapping[str, str]
) -> tuple[tuple[OutputRef, ...], list[tuple[InputPath, str]]]:
    """The references in an input's file fields, and the problems with those that do not parse."""
    refs: list[OutputRef] = []
    problems: list[tuple[InputPath, str]] = []
    for name in file_fields:
        value = input.get(name)
        places: Iterable[tuple[InputPath, Any]]
        if isinstance(value, list):
            places = (((name, i), v) for i, v in enumerate(value))
        else:
            places = (((name,), value),)
        for path, item in places:
            if not is_ref(item):
                continue
            match = _REF.fullmatch(item)
            if match is None:
                problems.append(
                    (
                        path,
                        f"{item!r} is not a reference to a job's output: write job:<id> (its first "
                        "output) or job:<id>#<k> (its k-th, from 1)",
                    )
                )
                continue
            refs.append(OutputRef(path, match.group(1), int(match.group(2) or 1)))
    return tuple(refs), problems


def substituted(input: Mapping[str, Any], values: Mapping[InputPath, str]) -> dict[str, Any]:
    """A copy of ``input`` with the values at these paths replaced (lists copied, never changed)."""
    out = dict(input)
    copied: set[str | int] = set()
    for path, value in values.items():
        name = path[0]
        if len(path) == 1:
            out[str(name)] = value
            continue
        if name not in copied:
            out[str(name)] = list(out[str(name)])
            copied.add(name)
        out[str(name)][int(path[1])] = value
    return out


def with_placeholders(input: Mapping[str, Any], refs: Sequence[OutputRef]) -> dict[str, Any]:
    """The input as its model's schema checks it before the run: each reference as a URL."""
    return substituted(
        input, {ref.path: _PLACEHOLDER.format(job=ref.job_id, index=ref.index) for ref in refs}
    )


def resolved(
    input: Mapping[str, Any], refs: Sequence[OutputRef], outputs: Mapping[str, Sequence[str]]
) -> dict[str, Any]:
    """The input as it is sent: each reference replaced by the output URL of the job it names
    (``outputs``: job id -> its output URLs, in RunComfy's order). ``KeyError``/``IndexError`` when one
    is missing; :func:`missing_output` says which."""
    return substituted(input, {ref.path: outputs[ref.job_id][ref.index - 1] for ref in refs})


def missing_output(refs: Sequence[OutputRef], outputs: Mapping[str, Sequence[str]]) -> OutputRef | None:
    """The first reference whose output is not among ``outputs``, if any."""
    for ref in refs:
        if len(outputs.get(ref.job_id, ())) < ref.index:
            return ref
    return None


def output_facts(spec: ModelSpec) -> tuple[tuple[str, ...], int]:
    """The kinds of file a model produces (``video``, ``image``, ``audio``) and the most outputs one
    request can have, as the catalog says (one video where it says nothing)."""
    return spec.output_kinds or (DEFAULT_OUTPUT_KIND,), spec.max_outputs


def ref_problem(ref: OutputRef, field_kind: str, upstream: ModelSpec) -> str | None:
    """What is wrong with feeding the output ``ref`` names, of a job of model ``upstream``, into a field
    that takes files of ``field_kind``, if anything."""
    kinds, most = output_facts(upstream)
    if ref.index > most:
        made = "one output" if most == 1 else f"at most {most} outputs"
        return f"{ref} names output {ref.index}, but {upstream.model_id} makes {made} per request"
    if field_kind not in kinds:
        made = _a(" or ".join(kinds))
        return f"{ref} is {made} (made by {upstream.model_id}), but this field takes {_a(field_kind)}"
    return None


def _a(kind: str) -> str:
    return f"an {kind}" if kind[:1] in "aeiou" else f"a {kind}"


def order(needs: Mapping[str, Sequence[str]]) -> tuple[list[str], list[list[str]]]:
    """The chained jobs upstream first (every job after the jobs it needs), and the cycles found (each
    as the ids along it, back to its first). ``needs``: job id -> the ids its input names; ids that are
    not keys need nothing."""
    done: set[str] = set()
    on_path: dict[str, int] = {}
    ordered: list[str] = []
    cycles: list[list[str]] = []
    for start in needs:
        if start in done:
            continue
        # An explicit stack, not recursion: a chain may be thousands of jobs long.
        path: list[str] = [start]
        on_path[start] = 0
        pending: list[Iterator[str]] = [iter(needs.get(start, ()))]
        while pending:
            upstream = next(pending[-1], None)
            if upstream is None:
                pending.pop()
                finished = path.pop()
                del on_path[finished]
                done.add(finished)
                ordered.append(finished)
                continue
            if upstream in on_path:
                cycles.append([*path[on_path[upstream] :], upstream])
            elif upstream not in done:
                on_path[upstream] = len(path)
                path.append(upstream)
                pending.append(iter(needs.get(upstream, ())))
    return ordered, cycles


def link_chains(
    built: list[Job],
    sources: Mapping[str, tuple[InputSource, ModelSpec, int]],
    known_ids: Collection[str],
    log: ProblemLog,
    catalog: Catalog,
) -> list[Job]:
    """Check every reference to another job's output (that job exists, can make that output, of a
    kind the field takes, and no chain loops), then give each chained job a fingerprint that holds
    its upstream jobs' own: a job whose upstream changes is a changed job."""
    chained = [job for job in built if job.after]
    if not chained:
        return built
    checker = InputChecker(log)
    by_id = {job.id: job for job in built}
    ids: list[str] | None = None
    for job in chained:
        source, spec, _ = sources[job.id]
        for ref in job.after:
            upstream = by_id.get(ref.job_id)
            if upstream is not None:
                problem = ref_problem(ref, spec.file_fields[str(ref.path[0])], catalog.models[upstream.model])
            elif ref.job_id in known_ids:
                continue  # that job has problems of its own, told already
            else:
                ids = ids if ids is not None else list(by_id)
                expanded = [i for i in ids if i.startswith(ref.job_id + "--")]
                if expanded:  # a matrix's or takes' base id: it stands for several jobs
                    some = ", ".join(expanded[:3]) + (", …" if len(expanded) > 3 else "")
                    problem = f"{ref} names no one job: {ref.job_id} expands to {some}; name one of them"
                else:
                    hint = suggest(ref.job_id, [i for i in ids if i != job.id]) if len(ids) <= 5000 else ""
                    problem = f"{ref} names no job of this manifest{hint}"
            if problem:
                checker.report(job.id, ref.path, problem, source)
    upstream_first, cycles = order({job.id: job.needs for job in chained})
    for cycle in cycles:
        job = by_id[cycle[0]]
        ref = next(r for r in job.after if r.job_id == cycle[1])
        loop = " -> ".join(cycle)
        checker.report(
            job.id,
            ref.path,
            f"{ref} makes a loop ({loop}): a chain cannot come back to a job",
            sources[job.id][0],
        )
    if log:
        return built
    for job_id in upstream_first:  # each fingerprint is made from its upstream jobs' final ones
        job = by_id[job_id]
        if job.after:
            # Each reference stands for the request it names, not the id it names it by: twins upstream
            # make twins downstream, and an edit upstream is an edit of every job made from it.
            stand_in = {ref.path: f"job:{by_id[ref.job_id].fingerprint}#{ref.index}" for ref in job.after}
            request = substituted(job.input, stand_in)
            by_id[job_id] = replace(job, fingerprint=fingerprint(job.model, request, sources[job_id][2]))
    return [by_id[job.id] for job in built]
