//! The users' webhook tokens over the socket: `tokens.create`, `tokens.list`,
//! `tokens.revoke` (admin only).

use sluice_shared::protocol::{
    ErrorCode, NoParams, RpcError, TokenCreateParams, TokenCreateResult, TokenInfo,
    TokenRevokeParams, TokenRevokeResult,
};

use super::dispatch::Cx;
use super::errors::store_err;
use crate::limits::tokens::{self, TOKEN_PREFIX, token_hash};

fn new_token() -> Result<String, RpcError> {
    tokens::new_token()
        .map_err(|e| RpcError::new(ErrorCode::Internal, format!("no randomness: {e}")))
}

/// `tokens.create`: a new token for a user, printed once; only its hash is kept.
pub(crate) async fn create(
    cx: &Cx<'_>,
    p: TokenCreateParams,
) -> Result<TokenCreateResult, RpcError> {
    if p.user.trim().is_empty() {
        return Err(RpcError::new(ErrorCode::InvalidParams, "the user is empty"));
    }
    // The token's user is compared with socket users (self-approval): it must be a plain name.
    if p.user.trim() != p.user || p.user.chars().any(char::is_control) {
        return Err(RpcError::new(
            ErrorCode::InvalidParams,
            "the user name has surrounding spaces or control characters",
        ));
    }
    if let Some(name) = &p.pipeline
        && cx.registry.get(name).is_none()
    {
        return Err(RpcError::new(
            ErrorCode::NotFound,
            format!("no pipeline '{name}'"),
        ));
    }
    let token = new_token()?;
    let prefix: String = token.chars().take(TOKEN_PREFIX.len() + 6).collect();
    let id = cx
        .engine
        .store()
        .create_token(
            &p.user,
            p.pipeline.as_deref(),
            &token_hash(&token),
            &prefix,
            cx.user(),
        )
        .await
        .map_err(store_err)?;
    Ok(TokenCreateResult {
        id,
        token,
        user: p.user,
        pipeline: p.pipeline,
    })
}

/// `tokens.list`.
pub(crate) async fn list(cx: &Cx<'_>, _: NoParams) -> Result<Vec<TokenInfo>, RpcError> {
    let rows = cx.engine.store().tokens().await.map_err(store_err)?;
    Ok(rows
        .into_iter()
        .map(|t| TokenInfo {
            id: t.id,
            user: t.user,
            pipeline: t.pipeline,
            prefix: t.prefix,
            created_at: t.created_at,
            created_by: t.created_by,
            revoked_at: t.revoked_at,
        })
        .collect())
}

/// `tokens.revoke`.
pub(crate) async fn revoke(
    cx: &Cx<'_>,
    p: TokenRevokeParams,
) -> Result<TokenRevokeResult, RpcError> {
    if !cx
        .engine
        .store()
        .revoke_token(p.id)
        .await
        .map_err(store_err)?
    {
        return Err(RpcError::new(
            ErrorCode::NotFound,
            format!("no active token {}", p.id),
        ));
    }
    Ok(TokenRevokeResult {
        id: p.id,
        revoked: true,
    })
}
