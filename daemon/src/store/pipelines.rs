//! Pipeline state kept across restarts: which pipelines an operator disabled.

use std::collections::BTreeSet;

use super::backend::read;
use super::{SqlArg, Store, StoreError};

impl Store {
    /// Enables or disables a pipeline by name.
    pub async fn set_pipeline_enabled(
        &self,
        name: &str,
        enabled: bool,
        by: Option<&str>,
    ) -> Result<(), StoreError> {
        self.exec(vec![(
            "INSERT INTO pipeline_state (name, enabled, updated_at, updated_by) VALUES ($1, $2, $3, $4)
             ON CONFLICT (name) DO UPDATE SET enabled = $2, updated_at = $3, updated_by = $4"
                .into(),
            vec![
                SqlArg::Text(name.into()),
                SqlArg::Int(i64::from(enabled)),
                SqlArg::Int(sluice_shared::time::now_ms()),
                SqlArg::opt_text(by.map(str::to_owned)),
            ],
        )])
        .await
        .map(|_| ())
    }

    /// Names of pipelines an operator disabled.
    pub async fn disabled_pipelines(&self) -> Result<BTreeSet<String>, StoreError> {
        let names: Vec<String> = read!(self, pool => sqlx::query_scalar(
            "SELECT name FROM pipeline_state WHERE enabled = 0",
        )
        .fetch_all(pool)
        .await?);
        Ok(names.into_iter().collect())
    }

    /// The newest stored version number of a pipeline.
    pub async fn latest_version_number(&self, name: &str) -> Result<Option<i64>, StoreError> {
        Ok(read!(self, pool => sqlx::query_scalar(
            "SELECT MAX(version) FROM pipeline_versions WHERE pipeline = $1",
        )
        .bind(name)
        .fetch_one(pool)
        .await?))
    }
}
