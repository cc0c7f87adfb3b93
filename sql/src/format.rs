//! Result encodings: JSON rows (HTTP), Arrow IPC stream (HTTP with `Accept`), pretty tables
//! (CLI).

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::json::writer::{JsonArray, WriterBuilder};
use datafusion::arrow::record_batch::RecordBatch;
use serde_json::{Map, Value};

use crate::{Result, SqlError};

/// Media type of the Arrow IPC stream format.
pub const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

/// Rows as JSON objects (NULLs explicit, timestamps as RFC 3339 text, lists as arrays).
pub fn json_rows(batches: &[RecordBatch]) -> Result<Vec<Map<String, Value>>> {
    let mut buf = Vec::new();
    {
        let mut w = WriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, JsonArray>(&mut buf);
        for b in batches {
            w.write(b)
                .map_err(|e| SqlError::Execution(format!("json: {e}")))?;
        }
        w.finish()
            .map_err(|e| SqlError::Execution(format!("json: {e}")))?;
    }
    if buf.is_empty() {
        return Ok(Vec::new());
    }
    let v: Vec<Map<String, Value>> =
        serde_json::from_slice(&buf).map_err(|e| SqlError::Execution(format!("json: {e}")))?;
    Ok(v)
}

/// Column names and types, for JSON responses.
pub fn columns(schema: &SchemaRef) -> Vec<Value> {
    schema
        .fields()
        .iter()
        .map(|f| serde_json::json!({"name": f.name(), "type": f.data_type().to_string()}))
        .collect()
}

/// The Arrow IPC stream encoding of a result.
pub fn arrow_ipc(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    {
        let mut w = datafusion::arrow::ipc::writer::StreamWriter::try_new(&mut buf, schema)
            .map_err(|e| SqlError::Execution(format!("arrow ipc: {e}")))?;
        for b in batches {
            w.write(b)
                .map_err(|e| SqlError::Execution(format!("arrow ipc: {e}")))?;
        }
        w.finish()
            .map_err(|e| SqlError::Execution(format!("arrow ipc: {e}")))?;
    }
    Ok(buf)
}

/// A boxed text table (what `memos sql` prints).
pub fn pretty(batches: &[RecordBatch]) -> Result<String> {
    Ok(
        datafusion::arrow::util::pretty::pretty_format_batches(batches)
            .map_err(|e| SqlError::Execution(format!("format: {e}")))?
            .to_string(),
    )
}
