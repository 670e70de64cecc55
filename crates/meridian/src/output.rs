//! Printing results: aligned tables for people, JSON for scripts.

use crate::cli::OutputFormat;
use serde_json::Value;

/// Prints `json` (JSON mode) or a table built from `headers` and `rows`.
pub fn emit(format: OutputFormat, json: Value, headers: &[&str], rows: Vec<Vec<String>>) {
    match format {
        OutputFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&json).unwrap_or_default()
        ),
        OutputFormat::Table => print_table(headers, &rows),
    }
}

/// Prints `json` or a one-line message.
pub fn emit_message(format: OutputFormat, json: Value, message: &str) {
    match format {
        OutputFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&json).unwrap_or_default()
        ),
        OutputFormat::Table => println!("{message}"),
    }
}

/// Prints an aligned table.
pub fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(width) = widths.get_mut(i) {
                *width = (*width).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = widths.get(i).copied().unwrap_or(0)))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(headers.iter().map(|h| h.to_uppercase()).collect());
    for row in rows {
        line(row.clone());
    }
}

/// Prints an error the way the chosen format expects.
pub fn print_error(format: OutputFormat, error: &anyhow::Error) {
    match format {
        OutputFormat::Json => println!("{}", serde_json::json!({ "error": format!("{error:#}") })),
        OutputFormat::Table => eprintln!("error: {error:#}"),
    }
}

/// Bytes shown as text when they are UTF-8, as `hex:...` otherwise.
pub fn show_bytes(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_string(),
        Err(_) => format!("hex:{}", hex::encode(bytes)),
    }
}
