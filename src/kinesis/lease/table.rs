//! The lease table's DynamoDB calls, with KCL's attribute names so that KCL's tooling reads
//! it: `leaseKey` (the shard id, the hash key), `leaseOwner`, `leaseCounter`, `checkpoint`,
//! `checkpointSubSequenceNumber`, `ownerSwitchesSinceCheckpoint`, `parentShardId` (a string
//! set), `childShardIds` (a string set, on a parent), `startingHashKey` / `endingHashKey`, and
//! KCL 3's `checkpointOwner` for a lease being
//! handed over. Every write but the first put is conditioned on the owner and counter the
//! writer last saw (or, during a hand-off, on being the checkpoint owner), and moves the
//! counter.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, ReturnValue,
    ScalarAttributeType, TableStatus,
};

use super::Lease;
use crate::kinesis::{KinesisError, aws_error as failed};

const KEY: &str = "leaseKey";
const OWNER: &str = "leaseOwner";
const COUNTER: &str = "leaseCounter";
const CHECKPOINT: &str = "checkpoint";
const SUB_SEQUENCE: &str = "checkpointSubSequenceNumber";
const OWNER_SWITCHES: &str = "ownerSwitchesSinceCheckpoint";
const PARENTS: &str = "parentShardId";
const STARTING_HASH_KEY: &str = "startingHashKey";
const ENDING_HASH_KEY: &str = "endingHashKey";
const CHECKPOINT_OWNER: &str = "checkpointOwner";
const CHILDREN: &str = "childShardIds";

/// What a conditional write found.
#[derive(Debug)]
pub enum Written {
    Done,
    /// The condition failed: someone else wrote the lease since it was read.
    Conflict,
}

/// A new lease's attributes beyond its key.
#[derive(Debug, Clone, Default)]
pub struct NewLease {
    pub parents: Vec<String>,
    pub starting_hash_key: Option<String>,
    pub ending_hash_key: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Table {
    client: Client,
    name: String,
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// Counts a call to the table, by what it is for.
fn count(purpose: &'static str) {
    metrics::counter!("infergate_kinesis_lease_table_calls_total", "call" => purpose).increment(1);
}

/// A conditional write's outcome: a failed condition is an answer, not an error.
fn conditional<T, E: ProvideErrorMetadata + std::fmt::Debug, R: std::fmt::Debug>(
    operation: &'static str,
    result: Result<T, SdkError<E, R>>,
) -> Result<Written, KinesisError> {
    match result {
        Ok(_) => Ok(Written::Done),
        Err(e) if e.code() == Some("ConditionalCheckFailedException") => Ok(Written::Conflict),
        Err(e) => Err(failed(operation, &e)),
    }
}

impl Table {
    /// The table `name`, created (on-demand capacity) when it is missing and `create` is set.
    pub async fn open(client: Client, name: &str, create: bool) -> Result<Self, KinesisError> {
        let table = Self {
            client,
            name: name.to_owned(),
        };
        let described = table.client.describe_table().table_name(name).send().await;
        match described {
            Ok(_) => {}
            Err(e) if e.code() == Some("ResourceNotFoundException") => {
                if !create {
                    return Err(KinesisError::LeaseTable(format!(
                        "the lease table {name} does not exist: create it (hash key \
                         `leaseKey`, a string) or set `kinesis.checkpoint.create = true`"
                    )));
                }
                table.create().await?;
            }
            Err(e) => return Err(failed("DescribeTable", &e)),
        }
        Ok(table)
    }

    async fn create(&self) -> Result<(), KinesisError> {
        let created = self
            .client
            .create_table()
            .table_name(&self.name)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(KEY)
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .expect("name and type are set"),
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name(KEY)
                    .key_type(KeyType::Hash)
                    .build()
                    .expect("name and type are set"),
            )
            .send()
            .await;
        match created {
            Ok(_) => tracing::info!(table = %self.name, "created the lease table"),
            // Another instance created it first.
            Err(e) if e.code() == Some("ResourceInUseException") => {}
            Err(e) => return Err(failed("CreateTable", &e)),
        }
        for _ in 0..600 {
            let out = self
                .client
                .describe_table()
                .table_name(&self.name)
                .send()
                .await
                .map_err(|e| failed("DescribeTable", &e))?;
            if out.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(KinesisError::LeaseTable(format!(
            "the lease table {} did not become ACTIVE within 60 s",
            self.name
        )))
    }

    /// Every lease, read consistently.
    pub async fn scan(&self) -> Result<Vec<Lease>, KinesisError> {
        count("scan");
        let mut leases = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let out = self
                .client
                .scan()
                .table_name(&self.name)
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| failed("Scan", &e))?;
            leases.extend(out.items().iter().filter_map(lease_of));
            match out.last_evaluated_key() {
                Some(key) if !key.is_empty() => start = Some(key.clone()),
                _ => return Ok(leases),
            }
        }
    }

    /// Creates the lease of a shard no one has a lease for, unowned, at `checkpoint`.
    pub async fn create_lease(
        &self,
        shard_id: &str,
        checkpoint: &str,
        new: &NewLease,
    ) -> Result<Written, KinesisError> {
        count("create_lease");
        let mut put = self
            .client
            .put_item()
            .table_name(&self.name)
            .item(KEY, s(shard_id))
            .item(COUNTER, n(0))
            .item(CHECKPOINT, s(checkpoint))
            .item(SUB_SEQUENCE, n(0))
            .item(OWNER_SWITCHES, n(0))
            .condition_expression("attribute_not_exists(#k)")
            .expression_attribute_names("#k", KEY);
        if !new.parents.is_empty() {
            put = put.item(PARENTS, AttributeValue::Ss(new.parents.clone()));
        }
        if let Some(key) = &new.starting_hash_key {
            put = put.item(STARTING_HASH_KEY, s(key));
        }
        if let Some(key) = &new.ending_hash_key {
            put = put.item(ENDING_HASH_KEY, s(key));
        }
        conditional("PutItem", put.send().await)
    }

    /// Adds `child` to the `childShardIds` of its parent's lease (a set: adding twice is
    /// adding once), as KCL records a reshard on the parent.
    pub async fn add_child(&self, parent: &str, child: &str) -> Result<(), KinesisError> {
        count("add_child");
        self.client
            .update_item()
            .table_name(&self.name)
            .key(KEY, s(parent))
            .update_expression("ADD #ch :child")
            .condition_expression("attribute_exists(#k)")
            .expression_attribute_names("#ch", CHILDREN)
            .expression_attribute_names("#k", KEY)
            .expression_attribute_values(":child", AttributeValue::Ss(vec![child.to_owned()]))
            .send()
            .await
            .map(|_| ())
            .or_else(|e| match e.code() {
                // The parent's lease is gone (past retention): nothing to record.
                Some("ConditionalCheckFailedException") => Ok(()),
                _ => Err(failed("UpdateItem", &e)),
            })
    }

    /// Takes a lease seen with `owner` (none: unowned) and `counter`, ending any hand-off of
    /// it (its previous owner is gone); the lease as it is now when taken.
    pub async fn take(&self, lease: &Lease, worker: &str) -> Result<Option<Lease>, KinesisError> {
        count("take");
        let owner_condition = match &lease.owner {
            Some(_) => "#o = :old",
            None => "attribute_not_exists(#o)",
        };
        let switches = u64::from(lease.owner.as_deref() != Some(worker));
        let mut update = self
            .update(&lease.key)
            .update_expression(
                "SET #o = :me, #c = #c + :one, #w = if_not_exists(#w, :zero) + :sw REMOVE #co",
            )
            .condition_expression(format!("#c = :seen AND {owner_condition}"))
            .expression_attribute_names("#o", OWNER)
            .expression_attribute_names("#w", OWNER_SWITCHES)
            .expression_attribute_names("#co", CHECKPOINT_OWNER)
            .expression_attribute_values(":me", s(worker))
            .expression_attribute_values(":seen", n(lease.counter))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":sw", n(switches));
        if let Some(owner) = &lease.owner {
            update = update.expression_attribute_values(":old", s(owner));
        }
        match update.return_values(ReturnValue::AllNew).send().await {
            Ok(out) => Ok(out.attributes().and_then(lease_of)),
            Err(e) if e.code() == Some("ConditionalCheckFailedException") => Ok(None),
            Err(e) => Err(failed("UpdateItem", &e)),
        }
    }

    /// Steals a live worker's lease as a hand-off (KCL 3's): `worker` becomes the owner and
    /// the previous owner the checkpoint owner, who may still checkpoint its page in hand and
    /// then ends the hand-off ([`Table::finish_handoff`]); the new owner reads only after that
    /// (or once the previous owner's writes have stopped for the failover time).
    pub async fn steal(&self, lease: &Lease, worker: &str) -> Result<Written, KinesisError> {
        count("steal");
        let Some(owner) = &lease.owner else {
            return Ok(Written::Conflict);
        };
        let update = self
            .update(&lease.key)
            .update_expression(
                "SET #o = :me, #co = :old, #c = #c + :one, #w = if_not_exists(#w, :zero) + :one",
            )
            .condition_expression("#c = :seen AND #o = :old AND attribute_not_exists(#co)")
            .expression_attribute_names("#o", OWNER)
            .expression_attribute_names("#w", OWNER_SWITCHES)
            .expression_attribute_names("#co", CHECKPOINT_OWNER)
            .expression_attribute_values(":me", s(worker))
            .expression_attribute_values(":old", s(owner))
            .expression_attribute_values(":seen", n(lease.counter))
            .expression_attribute_values(":zero", n(0))
            .send()
            .await;
        conditional("UpdateItem", update)
    }

    /// Gives a lease this worker stole, and has not started reading, back to the owner
    /// handing it over (at shutdown).
    pub async fn cancel_steal(&self, lease: &Lease, worker: &str) -> Result<Written, KinesisError> {
        count("cancel_steal");
        let Some(previous) = &lease.checkpoint_owner else {
            return Ok(Written::Conflict);
        };
        let update = self
            .update(&lease.key)
            .update_expression("SET #o = :old, #c = #c + :one REMOVE #co")
            .condition_expression("#o = :me AND #co = :old")
            .expression_attribute_names("#o", OWNER)
            .expression_attribute_names("#co", CHECKPOINT_OWNER)
            .expression_attribute_values(":me", s(worker))
            .expression_attribute_values(":old", s(previous))
            .send()
            .await;
        conditional("UpdateItem", update)
    }

    /// An UpdateItem of one lease that moves its counter (`#c`, by `:one`).
    fn update(
        &self,
        shard_id: &str,
    ) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(&self.name)
            .key(KEY, s(shard_id))
            .expression_attribute_names("#c", COUNTER)
            .expression_attribute_values(":one", n(1))
    }

    /// An UpdateItem of a lease `worker` holds at `counter`, not being handed over.
    fn update_held(
        &self,
        shard_id: &str,
        worker: &str,
        counter: u64,
    ) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
        self.update(shard_id)
            .expression_attribute_names("#o", OWNER)
            .expression_attribute_names("#co", CHECKPOINT_OWNER)
            .expression_attribute_values(":me", s(worker))
            .expression_attribute_values(":seen", n(counter))
    }

    /// Moves the counter of a lease `worker` holds at `counter`.
    pub async fn renew(
        &self,
        shard_id: &str,
        worker: &str,
        counter: u64,
    ) -> Result<Written, KinesisError> {
        count("renew");
        let update = self
            .update_held(shard_id, worker, counter)
            .update_expression("SET #c = #c + :one")
            .condition_expression("#o = :me AND #c = :seen AND attribute_not_exists(#co)")
            .send()
            .await;
        conditional("UpdateItem", update)
    }

    /// Writes the checkpoint of a lease `worker` holds at `counter`, or is handing over
    /// (fenced: refused if the lease was taken since).
    pub async fn checkpoint(
        &self,
        shard_id: &str,
        worker: &str,
        counter: u64,
        checkpoint: &str,
        sub_sequence: u64,
    ) -> Result<Written, KinesisError> {
        count("checkpoint");
        let update = self
            .update_held(shard_id, worker, counter)
            .update_expression("SET #c = #c + :one, #cp = :cp, #sub = :sub, #w = :zero")
            .condition_expression(
                "(#o = :me AND #c = :seen AND attribute_not_exists(#co)) OR #co = :me",
            )
            .expression_attribute_names("#cp", CHECKPOINT)
            .expression_attribute_names("#sub", SUB_SEQUENCE)
            .expression_attribute_names("#w", OWNER_SWITCHES)
            .expression_attribute_values(":cp", s(checkpoint))
            .expression_attribute_values(":sub", n(sub_sequence))
            .expression_attribute_values(":zero", n(0))
            .send()
            .await;
        conditional("UpdateItem", update)
    }

    /// Gives up a lease `worker` holds at `counter`: unowned, so that another instance takes
    /// it on its next cycle.
    pub async fn release(
        &self,
        shard_id: &str,
        worker: &str,
        counter: u64,
    ) -> Result<Written, KinesisError> {
        count("release");
        let update = self
            .update_held(shard_id, worker, counter)
            .update_expression("SET #c = #c + :one REMOVE #o")
            .condition_expression("#o = :me AND #c = :seen AND attribute_not_exists(#co)")
            .send()
            .await;
        conditional("UpdateItem", update)
    }

    /// Ends the hand-off of a stolen lease once `worker`, its previous owner, has stopped
    /// reading it: its new owner may read now.
    pub async fn finish_handoff(
        &self,
        shard_id: &str,
        worker: &str,
    ) -> Result<Written, KinesisError> {
        count("finish_handoff");
        let update = self
            .update(shard_id)
            .update_expression("SET #c = #c + :one REMOVE #co")
            .condition_expression("#co = :me")
            .expression_attribute_names("#co", CHECKPOINT_OWNER)
            .expression_attribute_values(":me", s(worker))
            .send()
            .await;
        conditional("UpdateItem", update)
    }

    /// Deletes an ended lease (its children have started).
    pub async fn delete_ended(&self, shard_id: &str) -> Result<Written, KinesisError> {
        count("delete_ended");
        let delete = self
            .client
            .delete_item()
            .table_name(&self.name)
            .key(KEY, s(shard_id))
            .condition_expression("#cp = :end")
            .expression_attribute_names("#cp", CHECKPOINT)
            .expression_attribute_values(":end", s(super::SHARD_END))
            .send()
            .await;
        conditional("DeleteItem", delete)
    }
}

/// A table row as a lease; `None` for a row without a key (not ours to read).
fn lease_of(item: &HashMap<String, AttributeValue>) -> Option<Lease> {
    let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
    let number = |name: &str| {
        item.get(name)
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Some(Lease {
        key: text(KEY)?,
        owner: text(OWNER),
        counter: number(COUNTER),
        checkpoint: text(CHECKPOINT).unwrap_or_default(),
        sub_sequence: number(SUB_SEQUENCE),
        parents: item
            .get(PARENTS)
            .and_then(|v| v.as_ss().ok())
            .cloned()
            .unwrap_or_default(),
        checkpoint_owner: text(CHECKPOINT_OWNER),
    })
}
