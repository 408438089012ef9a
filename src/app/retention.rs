//! Retention: rows older than their kept days are deleted by the cron trigger, a bounded number per tick (the
//! rest waits for the next one), so no run holds D1 for long.

use super::ports::StoreResult;

/// Rows deleted per statement.
pub const PRUNE_CHUNK: u32 = 1_000;
pub const DAY_MS: i64 = 86_400_000;

/// The time before which rows kept `days` are deleted.
pub fn cutoff(now: i64, days: u32) -> i64 {
    now - i64::from(days) * DAY_MS
}

/// Runs `delete_chunk` (`PRUNE_CHUNK` rows at most each) until a chunk comes back short or `chunks_per_run` are
/// spent; returns how many rows went.
pub async fn delete_in_chunks<F, Fut>(chunks_per_run: u32, mut delete_chunk: F) -> StoreResult<u64>
where
    F: FnMut(u32) -> Fut,
    Fut: std::future::Future<Output = StoreResult<u64>>,
{
    let mut total = 0;
    for _ in 0..chunks_per_run {
        let deleted = delete_chunk(PRUNE_CHUNK).await?;
        total += deleted;
        if deleted < u64::from(PRUNE_CHUNK) {
            break;
        }
    }
    Ok(total)
}
