//! Validation and conversion between `meridian.v1` messages and domain commands.

use crate::command::{
    Compare, CompareOp, CompareTarget, DeleteOutcome, PutOutcome, WriteOp, WriteOutcome,
};
use crate::limits::{LimitError, Limits, validate_namespace_name};
use meridian_proto::v1 as pb;

/// Checks a namespace name from a request.
pub fn namespace(name: &str) -> Result<(), LimitError> {
    validate_namespace_name(name)
}

/// Validates and converts one transaction condition.
pub fn compare(limits: &Limits, compare: pb::Compare) -> Result<Compare, LimitError> {
    limits.check_key(&compare.key)?;
    let op = match pb::CompareOp::try_from(compare.op) {
        Ok(pb::CompareOp::Equal) => CompareOp::Equal,
        Ok(pb::CompareOp::NotEqual) => CompareOp::NotEqual,
        Ok(pb::CompareOp::Greater) => CompareOp::Greater,
        Ok(pb::CompareOp::Less) => CompareOp::Less,
        Err(_) => {
            return Err(LimitError::Conflict {
                message: format!("unknown compare op {}", compare.op),
            });
        }
    };
    let target = match compare.target {
        Some(pb::compare::Target::Version(version)) => CompareTarget::Version(version),
        Some(pb::compare::Target::Value(value)) => {
            limits.check_value(&value)?;
            CompareTarget::Value(value)
        }
        Some(pb::compare::Target::Exists(exists)) => {
            if !matches!(op, CompareOp::Equal | CompareOp::NotEqual) {
                return Err(LimitError::Conflict {
                    message: "an `exists` comparison only supports EQUAL and NOT_EQUAL".into(),
                });
            }
            CompareTarget::Exists(exists)
        }
        None => {
            return Err(LimitError::MissingField {
                field: "compare.target",
            });
        }
    };
    Ok(Compare {
        key: compare.key,
        op,
        target,
    })
}

/// Validates and converts one transaction write; its namespace must be empty or
/// the transaction's own.
pub fn write_op(
    limits: &Limits,
    txn_namespace: &str,
    op: pb::TxnOp,
) -> Result<WriteOp, LimitError> {
    let check_namespace = |namespace: &str| {
        if namespace.is_empty() || namespace == txn_namespace {
            Ok(())
        } else {
            Err(LimitError::Conflict {
                message: format!(
                    "a transaction is atomic within one namespace: operation names {namespace:?}, transaction {txn_namespace:?}"
                ),
            })
        }
    };
    match op.op {
        Some(pb::txn_op::Op::Put(put)) => {
            check_namespace(&put.namespace)?;
            limits.check_key(&put.key)?;
            limits.check_value(&put.value)?;
            Ok(WriteOp::Put {
                key: put.key,
                value: put.value,
            })
        }
        Some(pb::txn_op::Op::Delete(delete)) => {
            check_namespace(&delete.namespace)?;
            limits.check_key(&delete.key)?;
            Ok(WriteOp::Delete { key: delete.key })
        }
        None => Err(LimitError::MissingField { field: "txn_op.op" }),
    }
}

/// A put outcome as a response message.
pub fn put_response(header: pb::ResponseHeader, outcome: PutOutcome) -> pb::PutResponse {
    pb::PutResponse {
        header: Some(header),
        version: outcome.version,
        previous_version: outcome.previous_version,
        session_token: Vec::new(),
    }
}

/// A delete outcome as a response message.
pub fn delete_response(header: pb::ResponseHeader, outcome: DeleteOutcome) -> pb::DeleteResponse {
    pb::DeleteResponse {
        header: Some(header),
        deleted: outcome.deleted,
        previous_version: outcome.previous_version,
        session_token: Vec::new(),
    }
}

/// A transaction write outcome as a response message.
pub fn write_outcome(header: &pb::ResponseHeader, outcome: WriteOutcome) -> pb::TxnOpResult {
    let result = match outcome {
        WriteOutcome::Put(put) => pb::txn_op_result::Result::Put(put_response(*header, put)),
        WriteOutcome::Delete(delete) => {
            pb::txn_op_result::Result::Delete(delete_response(*header, delete))
        }
    };
    pb::TxnOpResult {
        result: Some(result),
    }
}
