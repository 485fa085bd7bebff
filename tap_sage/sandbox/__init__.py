"""The sandbox: a local HTTP server that behaves like the Sage Accounting v3.1 API.

Commands (``sage-sandbox --help`` documents every flag)::

    sage-sandbox seed  [--db PATH] [--businesses N] [--scale N] [--seed N]
    sage-sandbox grant [--db PATH] [--client-id ID] [--scope full_access|readonly]
                       [--business-ids A,B]
    sage-sandbox serve [--host H] [--port P] [--db PATH] [--latency-ms N] [--fault-rate F]
                       [--oauth-fault-rate F] [--fault-seed N] [--fault-kinds K,..]
                       [--token-ttl S] [--max-concurrent N] [--quiet]

From Python use ``tap_sage.sandbox.runner`` (``SandboxProcess``, ``seed_db``, ``grant``).

Modules (each file's first line says its concern; imports go one way, from routing down to
storage, and out of the package only to ``tap_sage.sage``'s catalogue and wire types):

- serving: ``cli`` (the command), ``server`` (HTTP/1.1 keep-alive server), ``app`` (the WSGI
  application and its routing), ``settings`` (the ``serve`` knobs), ``answers`` (errors and
  responses in Sage's format), ``faults``;
- endpoints: ``oauth_server``, ``businesses``, ``lists`` (list queries and paging), ``writes``,
  ``actions``, with ``validation``, ``derive`` (links and totals), ``idempotency``, ``records``;
- data: ``store`` (SQLite), ``oauth`` (tokens), ``model`` (record conventions), ``seed`` (the
  seeder) with ``seed_data`` (reference data) and its generators ``seed_business``,
  ``seed_lookups``, ``seed_parties``, ``seed_documents``, ``seed_payments``, ``seed_books``;
- ``runner`` (the sandbox as a child process, for tests, the demo and benchmarks).

Only ``cli serve`` needs the web toolkit (Werkzeug): ``pip install 'tap-sage[sandbox]'``.

The wire
    Every stored record is on Sage's wire (``tap_sage.sage.wire``, one serializer driven by the
    read schemas): decimals (what the spec types ``number``) as Rails BigDecimal strings
    (``"10.0"``, ``"-430035.84"``), integers as numbers; a settings singleton writes unset
    strings and dates as ``""``; list items carry every attribute of their schema (``null``
    when unset; ``deleted_at`` only on tombstones); some products have ``active: null`` and
    ``links``. Write bodies are read with their decimals exact and totals are computed in
    ``Decimal``.

Behaviour, including the sandbox's choices where Sage's documentation is silent:

OAuth
    ``GET /oauth/authorize`` approves at once: 302 to ``redirect_uri?code=GB%2F...&country=GB
    &state=...`` (the code carries the lead business's country). Codes are single-use and live
    60 s; PKCE (S256/plain) is checked when a challenge was sent. ``POST /oauth/token``
    (form-encoded; ``authorization_code`` and ``refresh_token``; client auth by form fields or
    HTTP Basic) answers ``access_token, token_type "bearer", expires_in, refresh_token,
    refresh_token_expires_in 2678400, scope, requested_by_id``. Each refresh returns a new
    refresh token; a used, revoked or expired one answers 400 ``invalid_grant``. A wrong or
    unknown client answers ``invalid_client``: 401 when it authenticated by HTTP Basic, 400
    when by form fields (RFC 6749). ``POST /oauth/revoke`` (client auth + ``token``) answers
    200 ``{"success": "ok"}`` (as recorded) and ends the whole grant: every refresh token of
    it (the partner and every rotated successor) dies; access tokens already issued stay
    valid until they expire, as Sage's do. Old access tokens stay valid until they expire
    after a refresh too. Tokens from
    ``sage-sandbox grant`` expire ``--token-ttl`` seconds after issue or after the server's
    start, whichever is later. Expired/unknown token: 401 ``AuthorizationFailure``. A
    ``readonly`` token gets 403 ``AccessDenied`` on POST/PUT/DELETE.
Businesses
    ``GET /businesses`` answers as recorded: no parameters (any given is ignored), one page
    with every reachable business, ``$items_per_page: 2147483647``, items ``{displayed_as,
    id, $path}`` only; ``/businesses/{id}`` (and ``/businesses/lead``) has the rest, ``/user``.
    The edition is told by ``subscriptions[].id``: ``START``/``MICRO`` Start, ``ACCOUNTS``/
    ``ACCOUNTING_10`` Standard, ``ACCOUNTING`` Plus (displayed "Accounting"); status
    ``paying``. The country is ``country.id``. ``X-Business`` selects the business; without
    it the lead business (the first reachable); every answer but those of ``/businesses`` and
    ``/user`` carries an ``X-Business`` header naming the business it answered for. A
    business the token cannot reach (or that does not exist): 403 ``MultiUserAccessDenied``
    as recorded (``$source`` ``""``). A resource not available in the business's
    country/edition (catalogue availability): 403 ``FeatureUnavailable``.
Lists
    ``{"$total","$page","$next","$back","$itemsPerPage","$items"}``; ``$next``/``$back`` are
    relative paths without ``/v3.1`` (``/contacts?page=3&items_per_page=25&...`` keeping the
    other query parameters, URL-encoded), null at the ends. ``page`` from 1 (below 1 -> 1);
    ``items_per_page`` default 20, above 200 -> 200 (clamped, no error), non-integer -> 400
    ``InvalidParameter``. A page past the end returns the last page again, with ``$page`` set
    to the last page and ``$next`` null. Without ``attributes``: ``id, displayed_as, $path``;
    ``attributes=all``: everything; ``attributes=a,b``: those plus the three base fields.
    Default order: creation (so deletes shift later pages). ``updated_or_created_since`` is
    inclusive (``updated_at >= value``; fractional seconds round up), ``deleted_since`` is
    exclusive and switches the list to tombstones ``{id, displayed_as, $path, deleted_at}``
    (``attributes`` ignored) of records deleted after the value. ``from_date``/``to_date``
    filter on the document ``date`` (inclusive); ``updated_from_date``/``updated_to_date``
    on ``updated_at``'s day. ``sort=updated_at|created_at|date[:asc|:desc]`` (and
    ``due_date``/``expiry_date`` where the items have them) only where the catalogue lists
    ``sort`` (ties broken by creation order); elsewhere, or on another field, 400
    ``InvalidParameter`` with ``$source`` ``sort``. A list parameter the spec marks required
    (``tax_determinations``' ``usage``) missing: 400 ``InvalidParameter`` naming it. A bad
    date: 400 ``InvalidParameter``.
    Filters applied: ``search`` (substring of display/name/reference/e-mail/...), every
    ``*_id`` parameter whose record field exists (``contact_id``, ``status_id``,
    ``contact_type_id``, ``bank_account_id``, ...), boolean parameters naming a record field
    (``active``), ``email``. Parameters a resource does not list, and the rest of its
    parameters, are ignored (as Sage ignores unknown parameters).
Singletons
    ``GET /business_settings`` etc. return one object; ``PUT`` on the same path updates it.
Writes
    Body wrapper per the catalogue; Content-Type other than JSON -> 415; bad JSON -> 400
    ``InvalidJSON``; wrapper missing -> 422 ``RecordInvalid`` with ``$source`` = wrapper;
    verb not in the catalogue -> 405 ``MethodNotAllowed``; unknown or deleted id -> 404
    ``RecordNotFound``. Bodies are validated against ``catalogue.write_schema``: one 422
    ``RecordInvalid`` item per problem, ``$source`` the field path inside the wrapper
    (``name``, ``invoice_lines.0.ledger_account_id``). ``contact_id`` must name an existing
    contact (else 422). POST answers 201 with the record: a 32-hex ``id``, ``displayed_as``,
    ``$path``, ``created_at``/``updated_at`` (one-second precision), ``*_id`` fields turned
    into links (``contact_id`` -> ``contact: {id, displayed_as, $path}``, ``*_ids`` -> lists
    of links), fields unknown to the read schema dropped, line ids and totals computed.
    Contacts: ``reference`` at most 10 characters and unique among the business's contacts,
    deleted ones included (422 ``RecordInvalid``, ``$source`` ``reference``).
    Status rule: artefacts are created UNPAID unless ``status_id`` is ``DRAFT``; quotes and
    estimates are created PENDING unless ``status_id`` says otherwise. PUT changes only the
    fields sent (objects merged, lists replaced whole, so ``invoice_lines`` replaces the
    lines). ``idempotency_id`` (the resources of Sage's idempotency guide, POST and PUT): a repeat
    within 7 days (``--idempotency-ttl``) answers exactly what the first request answered,
    without applying it again; the same id on another resource is 422
    ``IdempotencyResourceMismatch``.
    DELETE answers 204 and keeps a tombstone (``deleted_at``). On ``void`` resources (sales
    invoices, sales credit notes, sales corrective invoices) DELETE of a DRAFT deletes it
    (204); otherwise it needs ``?void_reason=...`` (else 422, ``$source`` ``void_reason``)
    and answers 200 with the record, status VOID, ``void_reason`` set: an update, not a
    delete. Voiding a VOID document: 422.
Actions
    ``POST .../{id}/release``: DRAFT -> UNPAID, 201 (not a draft: 422). ``POST
    /journals/{id}/reissue``: the old journal becomes a tombstone (shows in
    ``deleted_since``), a copy with a new id is created, 201. ``GET /attachments/{id}/file``:
    the bytes (``application/octet-stream``); attachments are created by POST with base64
    ``file``. ``POST /sales_invoices`` with ``original_quote_estimate_id``: fills missing
    contact, date and lines from the quote/estimate, links it, and marks it INVOICED.
Faults and headers
    ``--latency-ms L``: every answer (a fault's too, or a dropped connection) leaves L ms
    after its request's first line arrived, as Sage's latency includes Sage's own work: the
    sandbox handles the request, then sleeps what is left of L (nothing when the work took
    longer). Only a 429 of ``--max-concurrent`` answers at once. ``--fault-rate`` applies to
    ``/v3.1`` (``--oauth-fault-rate`` to ``/oauth``), drawing from ``--fault-kinds``: ``500``, ``503``,
    ``429`` (``Retry-After: 1``), ``drop`` (socket closed, no answer), ``commit500`` and
    ``commitdrop`` (the write is committed, then answered 500 / dropped; on GETs they act
    as ``500`` / ``drop``). ``--fault-seed`` makes the sequence repeatable.
    ``--max-concurrent N`` (default 150, Sage's per-app limit; 0 = none): a ``/v3.1``
    request arriving while N are in flight gets 429 with ``Retry-After: 1``. Every answer has
    an ``x_request_id`` header (a UUID). Logs (stderr) hold request lines only; ``/oauth``
    lines lose their query strings, bodies are never logged (``--log-connections`` adds a
    line per accepted connection, ``--log-paging`` one per list page saying how it was read).
Connections and paging
    HTTP/1.1 with keep-alive, as Sage: a client's connection serves request after request
    (``TCP_NODELAY``; an answer leaves in one write with its ``Content-Length``); ``drop``
    faults close it. A list page costs the same at page 250 as at page 1: the server
    remembers where the pages it served ended and seeks from there, while no write (by any
    server on the file) came since; otherwise it skips rows as ``LIMIT/OFFSET`` does. The
    answers are those of ``LIMIT/OFFSET`` over the sorted list either way (``--paging
    offset`` always skips).
"""
