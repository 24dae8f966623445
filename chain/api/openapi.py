"""The OpenAPI 3.1 document of the node's HTTP API: the schemas are generated from the pydantic
models of :mod:`chain.api.models`; the routes, their parameters and responses are listed here
next to the handlers of :mod:`chain.api.server` and :mod:`chain.api.dashboard` (a test checks
every route is described, validates real answers against the models and fuzzes them all)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, TypeAdapter

from chain.api.models import (
    ANSWERS,
    REQUESTS,
    BanRequest,
    ConnectPeer,
    ExtendRequest,
    Hex64,
    Login,
    MineRequest,
    PrincipalText,
    ReleaseRequest,
    SendRequest,
)
from chain.net.control import MAX_UPLOAD, PolicyUpdate, PutQuery, QuoteRequest

HEX64: dict[str, Any] = TypeAdapter(Hex64).json_schema()
PRINCIPAL: dict[str, Any] = TypeAdapter(PrincipalText).json_schema()


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _err(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


def component_schemas(models: tuple[type[BaseModel], ...]) -> dict[str, Any]:
    """Every model's JSON schema (OpenAPI 3.1 is JSON Schema), with nested models as components."""
    out: dict[str, Any] = {}
    for model in models:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}",
                                          mode="serialization")
        out.update(schema.pop("$defs", {}))
        out[model.__name__] = schema
    return out


SCHEMAS: dict[str, Any] = component_schemas(ANSWERS + REQUESTS)


def _body(model: type[BaseModel], required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": _ref(
        model.__name__)}}}


AUTH: list[dict[str, list[str]]] = [{"cookie": []}]
BLOCK_ID = {"name": "ident", "in": "path", "required": True,
            "description": "best-chain height or block hash (64 hex digits)",
            "schema": {"type": "string", "pattern": "^([0-9]{1,12}|[0-9a-fA-F]{64})$"}}
UNAUTHORIZED = _err("missing or wrong token (or dashboard session)")
BUCKET = {"name": "bucket", "in": "query", "required": False,
          "description": "blocks per point, a whole number of storage periods (default: "
                         "enough periods that the chain fits in 240 points)",
          "schema": {"type": "integer", "minimum": 0, "maximum": 1 << 20}}


def _get(summary: str, ok: dict[str, Any], *, params: list[dict[str, Any]] | None = None,
         errors: dict[str, Any] | None = None, op: str) -> dict[str, Any]:
    responses: dict[str, Any] = {"200": ok}
    responses.update(errors or {})
    return {"get": {"summary": summary, "operationId": op, "parameters": params or [],
                    "responses": responses}}


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": schema}


def _query_params(model: type[BaseModel]) -> list[dict[str, Any]]:
    """A model's fields as query parameters."""
    schema = model.model_json_schema()
    required = set(schema.get("required", []))
    return [{"name": name, "in": "query", "required": name in required,
             "description": field.pop("description", ""), "schema": field}
            for name, field in schema["properties"].items()]


AGENT_ABSENT = _err("no agent of that kind runs on this node's data directory (the message "
                    "names the command that runs one)")
AGENT_ERRORS = {"401": UNAUTHORIZED, "502": _err("the agent hung up"), "503": AGENT_ABSENT,
                "504": _err("the agent did not answer in time")}

PROOF_PARAM = _query("proof", "1: add a proof of the answer against the tip's state root",
                     {"type": "string", "enum": ["0", "1", "true", "false"]})

PATHS: dict[str, Any] = {
    "/openapi.json": _get("This document.", {"description": "OpenAPI 3.1 document",
                                             "content": {"application/json": {"schema": {
                                                 "type": "object"}}}}, op="openapi"),
    "/status": _get("Node status: network, tip, sync, peers.", _json(_ref("Status"), "status"),
                    op="status"),
    "/tip": _get(
        "The best chain's tip; with after=H and wait=S, a long-poll answered once the tip is "
        "above H or after S seconds, whichever comes first.",
        _json(_ref("Tip"), "tip"),
        params=[_query("after", "wait for a tip above this height",
                       {"type": "integer", "minimum": 0, "maximum": 1 << 40}),
                _query("wait", "at most this many seconds (0..5, default 0)",
                       {"type": "number", "minimum": 0, "maximum": 5})],
        errors={"400": _err("bad parameter")}, op="tip"),
    "/headers": _get(
        "Best-chain headers from a height.",
        _json(_ref("Headers"), "headers"),
        params=[_query("start", "first height", {"type": "integer", "minimum": 0}),
                _query("count", "how many (1..2000)",
                       {"type": "integer", "minimum": 1, "maximum": 2000})],
        errors={"400": _err("bad parameter")}, op="headers"),
    "/blocks/{ident}": _get("A block with its events.", _json(_ref("Block"), "block"),
                            params=[BLOCK_ID],
                            errors={"400": _err("bad id"), "404": _err("unknown block")},
                            op="block"),
    "/blocks/{ident}/raw": _get(
        "A block's canonical bytes.",
        {"description": "canonical block bytes", "content": {"application/octet-stream": {
            "schema": {"type": "string", "format": "binary"}}}},
        params=[BLOCK_ID], errors={"400": _err("bad id"), "404": _err("unknown block")},
        op="blockRaw"),
    "/events/{id}": _get(
        "An event, pending or confirmed.", _json(_ref("EventStatus"), "event"),
        params=[{"name": "id", "in": "path", "required": True, "schema": HEX64}],
        errors={"400": _err("bad id"), "404": _err("unknown event")}, op="event"),
    "/events": {"post": {
        "summary": "Submit a signed event to the mempool (relayed to peers).",
        "operationId": "submitEvent", "security": AUTH,
        "requestBody": {"required": True, "content": {
            "application/json": {"schema": _ref("SubmitEvent")},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
        "responses": {"202": _json(_ref("Submitted"), "accepted into the mempool"),
                      "400": _err("undecodable or invalid event"), "401": UNAUTHORIZED}}},
    "/mempool": _get("Pending events, best fee rate first.", _json(_ref("Mempool"), "mempool"),
                     params=[_query("signer", "only this signer's events", PRINCIPAL),
                             _query("limit", "at most this many (1..1000)",
                                    {"type": "integer", "minimum": 1, "maximum": 1000})],
                     errors={"400": _err("bad parameter")}, op="mempool"),
    "/global/principals/{principal}": _get(
        "/global/principals/P: keys, address, balance, nonce.", _json(_ref("Principal"), "account"),
        params=[{"name": "principal", "in": "path", "required": True,
                 "schema": PRINCIPAL}, PROOF_PARAM],
        errors={"400": _err("bad principal"), "404": _err("no record")}, op="principal"),
    "/global/fragments/{path}": _get(
        "/global/fragments/PATH: holders of each fragment (PATH without its leading '/').",
        _json(_ref("Fragments"), "holders"),
        params=[{"name": "path", "in": "path", "required": True,
                 "schema": {"type": "string", "pattern": "^blk[a-z2-7]{58}(/[^/]+)*$"}},
                PROOF_PARAM],
        errors={"400": _err("bad path")}, op="fragments"),
    "/contracts": _get(
        "Storage contracts by owner or by host.", _json(_ref("Contracts"), "contracts"),
        params=[_query("owner", "owner principal", PRINCIPAL),
                _query("host", "host principal", PRINCIPAL)],
        errors={"400": _err("give exactly one of owner, host")}, op="contracts"),
    "/contracts/{id}": _get(
        "A storage contract.", _json(_ref("Contract"), "contract"),
        params=[{"name": "id", "in": "path", "required": True, "schema": HEX64}, PROOF_PARAM],
        errors={"400": _err("bad id"), "404": _err("unknown contract")}, op="contract"),
    "/peers": {
        **_get("Connected peers.", _json(_ref("Peers"), "peers"), op="peers"),
        "post": {"summary": "Dial a peer ([principal@]host:port).", "operationId": "connectPeer",
                 "security": AUTH,
                 "requestBody": _body(ConnectPeer),
                 "responses": {"202": _json(_ref("Dialling"), "dialling"),
                               "400": _err("bad address"), "401": UNAUTHORIZED}}},
    "/bans": {
        **_get("Active bans.", _json(_ref("Bans"), "bans"), op="bans"),
        "post": {"summary": "Ban an address or subnet (a.b.c.d, a.b.c.0/24, IPv6 likewise).",
                 "operationId": "banNetwork", "security": AUTH,
                 "requestBody": _body(BanRequest),
                 "responses": {"200": _json(_ref("Bans"), "banned"),
                               "400": _err("bad network"), "401": UNAUTHORIZED}},
        "delete": {"summary": "Lift every ban.", "operationId": "clearBans", "security": AUTH,
                   "responses": {"200": _json(_ref("Bans"), "bans lifted"),
                                 "401": UNAUTHORIZED}}},
    "/mine": {"post": {
        "summary": "Mine blocks now (regtest).", "operationId": "mine", "security": AUTH,
        "requestBody": _body(MineRequest),
        "responses": {"200": _json(_ref("Mined"), "mined"),
                      "400": _err("bad request or not regtest"), "401": UNAUTHORIZED}}},
    "/state/digest": _get("SHA-256 over the whole global tree (compare nodes).",
                          _json(_ref("StateDigest"), "digest"), op="stateDigest"),
    "/subscribe": {"get": {
        "summary": "WebSocket: one JSON message per connected or disconnected block "
                   "({type: block}) and per event entering the mempool ({type: event}).",
        "operationId": "subscribe",
        "responses": {"101": {"description": "switching to WebSocket"},
                      "400": _err("not a WebSocket request")}}},
    "/": {"get": {"summary": "The dashboard (explorer, host and owner views).",
                  "operationId": "dashboard",
                  "responses": {"200": {"description": "the page", "content": {"text/html": {
                      "schema": {"type": "string"}}}},
                                "404": _err("the assets are not built (make ui)")}}},
    "/ui/{name}": {"get": {
        "summary": "A dashboard asset (its scripts, styles and the charting library).",
        "operationId": "dashboardAsset",
        "parameters": [{"name": "name", "in": "path", "required": True,
                        "schema": {"type": "string"}}],
        "responses": {"200": {"description": "the asset", "content": {
            "text/javascript": {"schema": {"type": "string"}},
            "text/css": {"schema": {"type": "string"}}}},
            "404": _err("no such asset, or not built")}}},
    "/session": {
        **_get("Whether this browser is logged in to the dashboard.",
               _json(_ref("Session"), "session"), op="session"),
        "post": {"summary": "Log in: trade the api.cookie token for an HttpOnly session cookie "
                            "(the dashboard's actions then need no token in the page).",
                 "operationId": "login",
                 "requestBody": _body(Login),
                 "responses": {"200": _json(_ref("Session"), "logged in (Set-Cookie)"),
                               "400": _err("bad body"), "401": _err("wrong token")}},
        "delete": {"summary": "Log out.", "operationId": "logout",
                   "responses": {"200": _json(_ref("Session"), "logged out")}}},
    "/views/node": _get("This node for the dashboard: its wallet, its host (if its data "
                        "directory has one), tip, sync, login.",
                        _json(_ref("NodeView"), "node"), op="nodeView"),
    "/views/hosts/{principal}": _get(
        "A host's view: record, capacity (this node's host), contracts with their next proof "
        "window, alerts.", _json(_ref("HostView"), "host"),
        params=[{"name": "principal", "in": "path", "required": True, "schema": PRINCIPAL}],
        errors={"400": _err("bad principal")}, op="hostView"),
    "/views/owners/{principal}": _get(
        "An owner's view: files with their health, liabilities per period, the earnings of "
        "hosts paying the same principal, repairs.", _json(_ref("OwnerView"), "owner"),
        params=[{"name": "principal", "in": "path", "required": True, "schema": PRINCIPAL}],
        errors={"400": _err("bad principal")}, op="ownerView"),
    "/stats/chain": _get(
        "The chain's totals at every bucket of blocks: coins in circulation, bytes under "
        "contract, bytes proven (cumulative), active hosts.", _json(_ref("Series"), "series"),
        params=[BUCKET], errors={"400": _err("bad bucket")}, op="chainStats"),
    "/stats/hosts/{principal}": _get(
        "A host's record at every bucket of blocks (earned, bytes stored, periods proven and "
        "missed, collateral locked).", _json(_ref("Series"), "series"),
        params=[{"name": "principal", "in": "path", "required": True, "schema": PRINCIPAL},
                BUCKET], errors={"400": _err("bad principal or bucket")}, op="hostStats"),
    "/stats/owners/{principal}": _get(
        "An owner's contracts at every bucket of blocks (paid, escrow, bytes under contract, "
        "liability per period, active contracts).", _json(_ref("Series"), "series"),
        params=[{"name": "principal", "in": "path", "required": True, "schema": PRINCIPAL},
                BUCKET], errors={"400": _err("bad principal or bucket")}, op="ownerStats"),
    "/search": _get(
        "What an id names: a block (height or hash), an event, a contract, a principal or a "
        "path.", _json(_ref("Found"), "found"),
        params=[{**_query("q", "the id", {"type": "string", "minLength": 1, "maxLength": 1024}),
                 "required": True}],
        errors={"400": _err("not an id"), "404": _err("nothing by that id")}, op="search"),
    "/wallet/send": {"post": {
        "summary": "Send coins from the node's wallet.", "operationId": "walletSend",
        "security": AUTH,
        "requestBody": _body(SendRequest),
        "responses": {"202": _json(_ref("Submitted"), "signed and pending"),
                      "400": _err("bad request or refused"), "401": UNAUTHORIZED}}},
    "/contracts/{id}/release": {"post": {
        "summary": "End a contract of the node's wallet (the escrow left comes back).",
        "operationId": "releaseContract", "security": AUTH,
        "parameters": [{"name": "id", "in": "path", "required": True, "schema": HEX64}],
        "requestBody": _body(ReleaseRequest, required=False),
        "responses": {"202": _json(_ref("Submitted"), "signed and pending"),
                      "400": _err("bad request or refused"), "401": UNAUTHORIZED,
                      "403": _err("not the wallet's contract"),
                      "404": _err("unknown contract")}}},
    "/contracts/{id}/extend": {"post": {
        "summary": "Extend a contract of the node's wallet by some periods, with its host's "
                   "consent (asked over the storage protocol).",
        "operationId": "extendContract", "security": AUTH,
        "parameters": [{"name": "id", "in": "path", "required": True, "schema": HEX64}],
        "requestBody": _body(ExtendRequest),
        "responses": {"202": _json(_ref("Submitted"), "signed and pending"),
                      "400": _err("bad request, inactive, or no consent"), "401": UNAUTHORIZED,
                      "403": _err("not the wallet's contract"),
                      "404": _err("unknown contract")}}},
    "/store/quote": {"post": {
        "summary": "What storing a file costs (escrow: price x n x periods; fees), asked of the "
                   "owner agent on this node's data directory.",
        "operationId": "storeQuote", "security": AUTH, "requestBody": _body(QuoteRequest),
        "responses": {"200": _json(_ref("Quote"), "the cost"),
                      "400": _err("bad terms or path"), **AGENT_ERRORS}}},
    "/store/put": {"post": {
        "summary": "Store a file with the owner agent on this node's data directory: the body is "
                   "the file; it is sealed, erasure-coded and offered to hosts, paid by the "
                   "node's wallet. Refused if it costs more than max_cost.",
        "operationId": "storePut", "security": AUTH, "parameters": _query_params(PutQuery),
        "requestBody": {"required": True, "content": {"application/octet-stream": {
            "schema": {"type": "string", "format": "binary", "maxLength": MAX_UPLOAD}}}},
        "responses": {"200": _json(_ref("PutAnswer"), "sealed and offered"),
                      "400": _err("bad terms, path or funds"),
                      "409": _err("it costs more than max_cost"),
                      "413": _err("larger than the dashboard stores"), **AGENT_ERRORS}}},
    "/host/policy": {
        "get": {"summary": "What the host agent on this node's data directory sells now.",
                "operationId": "hostPolicy", "security": AUTH,
                "responses": {"200": _json(_ref("HostPolicy"), "the policy"), **AGENT_ERRORS}},
        "post": {"summary": "Change what the host agent sells: applied to its next offers and "
                            "saved to host/policy.json.",
                 "operationId": "setHostPolicy", "security": AUTH,
                 "requestBody": _body(PolicyUpdate),
                 "responses": {"200": _json(_ref("HostPolicy"), "the policy now"),
                               "400": _err("bad policy"), **AGENT_ERRORS}}},
    "/metrics": _get("Prometheus metrics.", {"description": "text exposition format 0.0.4",
                                             "content": {"text/plain": {"schema": {
                                                 "type": "string"}}}}, op="metrics"),
}


def openapi_document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "Blockcoin node API", "version": "1",
                 "description": "Reads are open. Requests that spend or change node state need "
                                "'Authorization: Bearer <token>' with the token from the "
                                "api.cookie file (mode 0600) in the node's data directory. "
                                "Errors are JSON {error, message} with a 4xx status."},
        "servers": [{"url": "/"}],
        "paths": PATHS,
        "components": {"schemas": SCHEMAS, "securitySchemes": {
            "cookie": {"type": "http", "scheme": "bearer",
                       "description": "token from <datadir>/api.cookie"}}},
    }
