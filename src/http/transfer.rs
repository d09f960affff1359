//! `/users/export` and `/users/import`: a user's whole account as one archive
//! (docs/EXPORT-FORMAT.md). Export streams as it is read; import is all or nothing.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::extract::{Caller, Json};
use crate::error::{AppError, AppResult};
use crate::service::transfer::{ExportOptions, ImportReport, Progress};
use crate::service::Instance;

pub fn router() -> OpenApiRouter<Instance> {
    OpenApiRouter::new()
        .routes(routes!(export_account))
        .routes(routes!(import_account))
}

/// Download the caller's whole account as a tar.gz archive (streamed). Unit env, state
/// storage and (with `include_credentials`) registry credentials are sealed with the
/// passphrase; without one they are left out.
#[utoipa::path(post, path = "/users/export", tag = "users", request_body = ExportOptions,
    responses((status = 200, description = "application/gzip archive", content_type = "application/gzip"),
              (status = 422, description = "Bad options")))]
async fn export_account(
    State(state): State<Instance>,
    Caller(agent): Caller,
    Json(opts): Json<ExportOptions>,
) -> AppResult<Response> {
    let user = agent.user()?.clone();
    state.check_export_options(&opts)?;
    let scope = state.export_scope_of(&agent)?;
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(8);
    let (err_tx, err_rx) = tokio::sync::oneshot::channel::<String>();
    tokio::spawn(async move {
        if let Err(e) = state.export_archive(scope, &opts, tx, &|_| {}).await {
            tracing::error!("export of {} failed: {}", user.login, e.detail());
            let _ = err_tx.send(e.detail());
        }
    });
    // The body ends with an error (the connection is cut, never a short "valid" archive)
    // when the export fails half-way.
    let data = tokio_stream_from(rx).map(Ok::<_, std::io::Error>);
    let fail = futures_util::stream::once(async move {
        match err_rx.await {
            Ok(msg) => Err(std::io::Error::other(msg)),
            Err(_) => Ok(bytes::Bytes::new()),
        }
    });
    let body = Body::from_stream(data.chain(fail));
    let filename = format!(
        "pepeunit-{}-{}.tar.gz",
        agent.user()?.login,
        chrono::Utc::now().format("%Y%m%d-%H%M%S")
    );
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/gzip".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
        ],
        body,
    )
        .into_response())
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<bytes::Bytes>,
) -> impl futures_util::Stream<Item = bytes::Bytes> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Import an archive made by `/users/export` (on this or another instance) into the
/// caller's account. The body is the archive; `X-Passphrase` unseals env and credentials.
/// Nothing changes unless everything imports; the report says what was remapped, renamed,
/// reused or skipped.
#[utoipa::path(post, path = "/users/import", tag = "users",
    request_body(content = Vec<u8>, content_type = "application/gzip"),
    params(("x-passphrase" = Option<String>, Header, description = "the export's passphrase")),
    responses((status = 200, body = ImportReport), (status = 422, description = "Broken, tampered or unsupported archive")))]
async fn import_account(
    State(state): State<Instance>,
    Caller(agent): Caller,
    headers: HeaderMap,
    body: Body,
) -> AppResult<axum::Json<ImportReport>> {
    let user = agent.user()?.clone();
    let passphrase = match headers.get("x-passphrase") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| AppError::transfer("X-Passphrase must be visible ASCII"))?
                .to_string(),
        ),
    };
    let max = state.config.import_max_bytes;
    let mut stream = body.into_data_stream();
    let mut archive = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| AppError::transfer(format!("upload failed: {e}")))?;
        if (archive.len() + chunk.len()) as u64 > max {
            return Err(AppError::transfer(format!(
                "The archive is larger than PU_IMPORT_MAX_BYTES ({max} bytes)"
            )));
        }
        archive.extend_from_slice(&chunk);
    }
    if archive.is_empty() {
        return Err(AppError::transfer("The request body must be the archive"));
    }
    // long imports can be followed in the log
    let progress =
        |p: Progress| tracing::info!(table = p.table, records = p.records, "import progress");
    let report = state
        .import_archive(user.uuid, archive, passphrase, &progress)
        .await?;
    state.sync_imported(&report);
    Ok(axum::Json(report))
}
