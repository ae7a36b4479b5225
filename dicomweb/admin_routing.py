"""Admin HTTP API of the router, mounted under /admin by ``dopamine serve`` (the Admin check is the admin
application's): rule sets with their versions, a dry run for the rule editor, the quarantine, the forward
queue. Same operations as ``dopamine rules|quarantine|forward``.

  GET    /rulesets                         the rule sets: active version, inputs, state
  GET    /rulesets/{name}                  its history (versions, authors, dates) and the active XML
  GET    /rulesets/{name}/versions/{v}     the XML of one version (application/xml)
  PUT    /rulesets/{name}                  body: the XML (application/xml); query: protocol, calling_aet,
                                           user, comment. Validated, stored as a new version, activated.
                                           400 with line and column for an invalid rule set (the active
                                           version stays).
  DELETE /rulesets/{name}                  stop applying it
  POST   /rulesets/dry-run                 multipart/form-data: "ruleset" (XML) and one or more "instance"
                                           (DICOM files): per instance, the decision and every change.
                                           Nothing is stored. MapValue/Pseudonymize tables must be inline.
  GET    /quarantine                       what routing kept aside, and why
  POST   /quarantine/{uid}/release         store it in the archive
  DELETE /quarantine/{uid}                 delete it
  GET    /forward                          the forward queue
  POST   /forward/retry                    retry the failed forwards
"""

from __future__ import annotations

import io
from typing import Any

from pydicom import dcmread
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from dopamine_py.archive import Source
from dopamine_py.router import Selector
from routing import RuleApplicationError, RuleSetError, load_ruleset

from .admin import AdminError, actor_of

MAX_RULESET = 4 * 1024 * 1024
MAX_DRY_RUN = 64 * 1024 * 1024


async def _body(request: Request, limit: int) -> bytes:
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > limit:
            raise AdminError(f"request body larger than {limit // (1024 * 1024)} MiB", 413)
    return bytes(data)


def routing_routes(archive) -> list[Route]:
    registry = archive.routing.router.registry

    async def list_rulesets(request: Request) -> Response:
        bindings = await run_in_threadpool(registry.bindings)
        return JSONResponse([_binding(b) for b in bindings])

    async def get_ruleset(request: Request) -> Response:
        name = request.path_params["name"]
        binding = await run_in_threadpool(registry.binding, name)
        if binding is None:
            raise AdminError(f"no rule set {name}", 404)
        record = await run_in_threadpool(registry.version_record, name, binding["version"])
        history = await run_in_threadpool(registry.history, name)
        return JSONResponse({**_binding(binding), "xml": record["xml"], "history": history})

    async def get_version(request: Request) -> Response:
        name, version = request.path_params["name"], request.path_params["version"]
        record = await run_in_threadpool(registry.version_record, name, version)
        if record is None:
            raise AdminError(f"rule set {name} has no version {version}", 404)
        return Response(record["xml"], media_type="application/xml")

    async def put_ruleset(request: Request) -> Response:
        name = request.path_params["name"]
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type not in ("application/xml", "text/xml"):
            raise AdminError("send the rule set as XML (Content-Type: application/xml)", 415)
        xml = await _body(request, MAX_RULESET)
        params = request.query_params
        selector = Selector(params.get("protocol") or None, params.get("calling_aet") or None, params.get("user") or None)
        try:
            version = await run_in_threadpool(registry.activate, name, xml, {}, selector, actor_of(request),
                                              params.get("comment"))
        except RuleSetError as exc:
            return JSONResponse({"error": "invalid rule set; the active version (if any) stays",
                                 "problems": [str(p) for p in exc.problems]}, status_code=400)
        archive.routing.router.refresh()
        return JSONResponse({"name": name, "version": version, "active": True, "inputs": selector.describe()})

    async def delete_ruleset(request: Request) -> Response:
        name = request.path_params["name"]
        if not await run_in_threadpool(registry.deactivate, name, actor_of(request)):
            raise AdminError(f"no active rule set {name}", 404)
        archive.routing.router.refresh()
        return Response(status_code=204)

    async def dry_run(request: Request) -> Response:
        if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
            raise AdminError("send multipart/form-data with a 'ruleset' field and 'instance' files", 415)
        if int(request.headers.get("content-length") or 0) > MAX_DRY_RUN:
            raise AdminError(f"request body larger than {MAX_DRY_RUN // (1024 * 1024)} MiB", 413)
        async with request.form(max_files=100) as form:
            text = form.get("ruleset")
            instances = [(f.filename, await f.read()) for f in form.getlist("instance") if hasattr(f, "read")]
        if text is None:
            raise AdminError("the form has no 'ruleset' field")
        xml = (await text.read()) if hasattr(text, "read") else str(text).encode("utf-8")
        if not instances:
            raise AdminError("the form has no 'instance' file")
        try:
            ruleset = await run_in_threadpool(load_ruleset, xml)
        except RuleSetError as exc:
            return JSONResponse({"error": "invalid rule set", "problems": [str(p) for p in exc.problems]}, status_code=400)
        source = Source(protocol="dry-run", user=request.state.admin.user)
        results = []
        for filename, data in instances:
            results.append(await run_in_threadpool(_try_one, ruleset, filename, data, source, archive.routing.router.secrets))
        return JSONResponse(results)

    async def quarantine_list(request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(archive.quarantined))

    async def quarantine_release(request: Request) -> Response:
        uid = request.path_params["uid"]
        try:
            result = await run_in_threadpool(archive.release, uid, actor_of(request))
        except KeyError:
            raise AdminError(f"{uid} is not in quarantine", 404) from None
        return JSONResponse({"sop_instance_uid": uid, "status": result.status, "reason": result.reason},
                            status_code=200 if result.ok else 409)

    async def quarantine_discard(request: Request) -> Response:
        uid = request.path_params["uid"]
        if not await run_in_threadpool(archive.discard, uid, actor_of(request)):
            raise AdminError(f"{uid} is not in quarantine", 404)
        return Response(status_code=204)

    async def forward_list(request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(archive.routing.forward.items))

    async def forward_retry(request: Request) -> Response:
        return JSONResponse({"retried": await run_in_threadpool(archive.routing.forward.retry_failed)})

    return [
        Route("/rulesets", list_rulesets, methods=["GET"]),
        Route("/rulesets/dry-run", dry_run, methods=["POST"]),
        Route("/rulesets/{name}", get_ruleset, methods=["GET"]),
        Route("/rulesets/{name}", put_ruleset, methods=["PUT"]),
        Route("/rulesets/{name}", delete_ruleset, methods=["DELETE"]),
        Route("/rulesets/{name}/versions/{version:int}", get_version, methods=["GET"]),
        Route("/quarantine", quarantine_list, methods=["GET"]),
        Route("/quarantine/{uid}/release", quarantine_release, methods=["POST"]),
        Route("/quarantine/{uid}", quarantine_discard, methods=["DELETE"]),
        Route("/forward", forward_list, methods=["GET"]),
        Route("/forward/retry", forward_retry, methods=["POST"]),
    ]


def _binding(b: dict[str, Any]) -> dict[str, Any]:
    return {"name": b["name"], "version": b["version"], "active": b["active"],
            "inputs": Selector(b.get("protocol"), b.get("calling_aet"), b.get("user")).describe(),
            "changed_by": b["changed_by"], "changed_at": b["changed_at"]}


def _try_one(ruleset, filename: str | None, data: bytes, source: Source, secrets) -> dict[str, Any]:
    entry: dict[str, Any] = {"instance": filename}
    try:
        ds = dcmread(io.BytesIO(data))
    except Exception as exc:  # pydicom raises many types for files that are not DICOM
        return {**entry, "error": f"not a DICOM file: {exc}"}
    entry["sop_instance_uid"] = str(ds.get("SOPInstanceUID", ""))
    try:
        result = ruleset.apply(ds, source, secrets)
    except RuleApplicationError as exc:
        return {**entry, "error": str(exc), "decision": "reject or quarantine (routing.on_error)"}
    return {**entry, "decision": result.decision, "reason": result.reason, "forward": result.forward,
            "fired": result.fired,
            "changes": [{"path": c.path, "kind": c.kind, "old": c.old, "new": c.new, "rule": c.rule}
                        for c in result.changes]}
