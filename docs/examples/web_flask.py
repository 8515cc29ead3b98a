"""A Flask app where every request runs as its tenant: the SAPatterns extension resolves the
tenant and the user in before_request and resets them in the teardown, on errors too, so a
reused worker thread never serves one request as another's tenant. A streamed body keeps its
request's scope through stream_with_scope."""

from concurrent.futures import ThreadPoolExecutor

from flask import Flask, Request, Response, g
from sqlalchemy import URL, create_engine, select, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

import sa_patterns
from sa_patterns.context import current_tenant
from sa_patterns.integrations.flask import SAPatterns, stream_with_scope


class Base(DeclarativeBase):
    pass


class Note(sa_patterns.TenantMixin, sa_patterns.Audited, Base):
    __tablename__ = "notes"
    id: Mapped[int] = mapped_column(primary_key=True)
    body: Mapped[str]


def tenant_of(request: Request) -> int | None:
    value = request.headers.get("X-Tenant")
    return int(value) if value and value.isdigit() else None


sa = SAPatterns(tenant=tenant_of, actor=lambda request: request.headers.get("X-User"))


def create_app(Session: sessionmaker) -> Flask:
    app = Flask(__name__)
    sa.init_app(app)

    @app.post("/notes")
    def add_note() -> dict:
        with Session.begin() as s:
            s.add(Note(body=f"note of request {g.sa_patterns_request_id}"))
        return {"tenant": current_tenant()}

    @app.get("/notes.txt")
    def export() -> Response:
        def lines():  # iterated after the view returned: stream_with_scope keeps the scope
            with Session() as s:
                for body in s.scalars(select(Note.body).order_by(Note.id)):
                    yield body + "\n"

        return Response(stream_with_scope(lines()), mimetype="text/plain")

    return app


def main(url: URL) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        sa_patterns.create_all(conn, Base.metadata)  # applications: alembic --autogenerate
    app = create_app(sa_patterns.install(sessionmaker(engine)))

    def post(tenant: int) -> int:  # a threaded server: one request per thread at a time
        response = app.test_client().post("/notes", headers={"X-Tenant": str(tenant), "X-User": "bob"})
        return response.json["tenant"]

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(post, [1, 2, 1, 2, 1])) == [1, 2, 1, 2, 1]

    client = app.test_client()
    export = client.get("/notes.txt", headers={"X-Tenant": "2"})
    assert len(export.text.splitlines()) == 2
    assert client.get("/notes.txt").status_code == 403  # no tenant, no view
    request_id = client.post("/notes", headers={"X-Tenant": "1"}).headers["X-Request-Id"]
    with engine.connect() as conn:  # the audit log names the request
        logged = conn.execute(text("SELECT request FROM audit_log WHERE request->>'request_id' = :r"),
                              {"r": request_id}).scalar_one()
    assert logged == {"request_id": request_id, "method": "POST", "path": "/notes"}
    engine.dispose()
