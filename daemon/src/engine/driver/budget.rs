//! The LLM token budget of a run's user: checked before an `llm` node
//! starts, charged with the attempt's end.

use std::sync::Arc;

use super::Run;
use crate::engine::{EngineError, Inner};
use crate::nodes::{self, NodeError, Outcome};

impl Run {
    /// Whom the run's LLM tokens count against: its trigger's user, else the
    /// pipeline's owner.
    pub(super) fn llm_user(&self) -> String {
        let user = self.record.trigger.user.as_deref();
        let user = user.or(self.version.pipeline.owner.as_deref());
        crate::limits::user_key(user).to_owned()
    }

    /// Charges the tokens an `llm` attempt spent (even a failed one) to the
    /// run's user and pipeline, committed with the attempt's end.
    pub(super) fn charge_llm(&mut self, inner: &Inner, result: &Result<Outcome, NodeError>) {
        let Some(usage) = nodes::llm::usage_of(result) else {
            return;
        };
        let user = self.llm_user();
        let (day, _) = inner.opts.limits.daily(&user, jiff::Timestamp::now());
        let charge = crate::store::llm_usage::LlmCharge {
            user,
            day: day.day,
            pipeline: self.record.pipeline.clone(),
            tokens_in: usage.tokens_in,
            tokens_out: usage.tokens_out,
            estimated: usage.estimated,
        };
        self.changes.push(charge.into_change(inner.store.dialect()));
    }

    /// Why an `llm` node may not start now: its user spent the day's LLM
    /// tokens (the trigger was checked too, but a run's nodes can outlast it).
    pub(super) async fn llm_over_cap(
        &mut self,
        inner: &Inner,
    ) -> Result<Option<String>, EngineError> {
        let limits = Arc::clone(&inner.opts.limits);
        let user = self.llm_user();
        let Some(cap) = limits.config().for_user(&user).daily_llm_tokens else {
            return Ok(None);
        };
        // Tokens charged by attempts that just ended must count.
        self.flush(inner).await?;
        let user = user.as_str();
        let now = jiff::Timestamp::now();
        let (charge, next_day) = limits.daily(user, now);
        let used = inner.store.usage(user, &charge.day).await?.llm_tokens;
        if u64::try_from(used).unwrap_or(0) < cap {
            return Ok(None);
        }
        let refusal = limits.daily_refusal(
            crate::limits::LimitKind::DailyLlmTokens,
            user,
            &self.record.pipeline,
            (used, cap),
            (now, next_day),
        );
        Ok(Some(refusal.message))
    }
}
