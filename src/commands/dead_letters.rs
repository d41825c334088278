//! `outbox-relay dead-letters list | retry | discard`.

use crate::db::DatabaseUrl;
use crate::outbox::admin::{self, Selection};

pub async fn list(database: &DatabaseUrl, limit: i64, json: bool) -> Result<(), String> {
    let client = super::connect(database).await?;
    let letters = admin::dead_letters(&client, limit)
        .await
        .map_err(|e| e.to_string())?;
    if json {
        let text = serde_json::to_string_pretty(&letters).map_err(|e| e.to_string())?;
        println!("{text}");
        return Ok(());
    }
    if letters.is_empty() {
        println!("no dead letters");
        return Ok(());
    }
    println!(
        "{:>10}  {:<20}  {:<24}  {:>8}  {:<20}  last error",
        "id", "dead-lettered at", "topic", "attempts", "key"
    );
    for letter in &letters {
        println!(
            "{:>10}  {:<20}  {:<24}  {:>8}  {:<20}  {}",
            letter.id,
            letter.dead_lettered_at.format("%Y-%m-%d %H:%M:%S"),
            letter.topic,
            letter.attempts,
            letter.key.as_deref().unwrap_or("-"),
            letter.last_error.as_deref().unwrap_or("-")
        );
    }
    Ok(())
}

pub async fn retry(database: &DatabaseUrl, selection: &Selection) -> Result<(), String> {
    let client = super::connect(database).await?;
    let ids = admin::retry_dead_letters(&client, selection)
        .await
        .map_err(|e| e.to_string())?;
    report("put back for delivery", &ids, selection)
}

pub async fn discard(database: &DatabaseUrl, selection: &Selection) -> Result<(), String> {
    let client = super::connect(database).await?;
    let ids = admin::discard_dead_letters(&client, selection)
        .await
        .map_err(|e| e.to_string())?;
    report("discarded", &ids, selection)
}

fn report(done: &str, ids: &[i64], selection: &Selection) -> Result<(), String> {
    println!("{} dead letter(s) {done}", ids.len());
    if let Selection::Ids(asked) = selection {
        let missing: Vec<String> = asked
            .iter()
            .filter(|id| !ids.contains(id))
            .map(|id| id.to_string())
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "not dead letters (unknown or not dead-lettered): {}",
                missing.join(", ")
            ));
        }
    }
    Ok(())
}
