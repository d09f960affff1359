//! Publishing: local changes (reported by [`Federation::changed`], and the start-up sweep)
//! become Create/Update/Delete activities for followers through the durable delivery queue,
//! and the hub index follows them.

use super::*;

impl Federation {
    /// Tells federation that a local Repo, Unit or user changed (created, edited, deleted, or
    /// its visibility changed). Handled in the background by [`Federation::run_changes`].
    pub fn changed(&self, r: LocalRef) {
        let _ = self.0.changes.send(r);
    }

    /// Applies the changes reported by [`Federation::changed`] until `stop` fires. On start it
    /// first reconciles every public and every published object, so changes lost in a crash
    /// are sent late rather than never.
    pub async fn run_changes(self, stop: tokio::sync::watch::Receiver<bool>) {
        let mut rx = match self.0.changes_rx.lock().expect("changes lock").take() {
            Some(rx) => rx,
            None => return,
        };
        let mut stop = stop;
        if let Err(e) = self.sweep().await {
            tracing::warn!("federation: reconcile sweep failed: {e}");
        }
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                r = rx.recv() => match r {
                    Some(r) => {
                        if let Err(e) = self.reconcile(r).await {
                            tracing::warn!("federation: publishing {r:?} failed: {e}");
                        }
                    }
                    None => return,
                },
            }
        }
    }

    /// Reconciles every public and every published object with what followers were told.
    pub async fn sweep(&self) -> FedResult<usize> {
        let b = &self.0.backend;
        let mut done = 0;
        let mut offset = 0;
        loop {
            let (_, page) = b.public_objects(offset, 200).await?;
            if page.is_empty() {
                break;
            }
            offset += page.len() as i64;
            for obj in page {
                let r = match &obj {
                    LocalObject::Repo(x) => LocalRef::Repo(x.uuid),
                    LocalObject::Unit(x) => LocalRef::Unit(x.uuid),
                    _ => continue,
                };
                self.publish(r, Some(obj)).await?;
                done += 1;
            }
        }
        for id in b.published_all().await? {
            if let Some(r) = self.local_ref(&id) {
                if b.local_object(r).await?.is_none() {
                    self.publish(r, None).await?;
                    done += 1;
                }
            }
        }
        Ok(done)
    }

    /// Makes followers and the hub agree with the current state of one local object.
    pub async fn reconcile(&self, r: LocalRef) -> FedResult<()> {
        let obj = self.0.backend.local_object(r).await?;
        self.publish(r, obj).await
    }

    pub(super) async fn publish(&self, r: LocalRef, obj: Option<LocalObject>) -> FedResult<()> {
        if matches!(r, LocalRef::Instance | LocalRef::User(_)) {
            return Ok(());
        }
        let b = &self.0.backend;
        let id = self.actor_id(r);
        let published = b.published(id.as_str()).await?;
        match obj {
            Some(obj) => {
                // what followers were told is compared by content, not by the row's timestamp
                // (which every state report of a Unit moves)
                let document = self.document_of(r, &obj);
                let mark = fingerprint(&document);
                if published.as_deref() == Some(mark.as_str()) {
                    return Ok(());
                }
                let hub = self.0.hub.clone();
                match documents::local_hub_doc(&obj, &id, &self.0.settings.domain) {
                    Some(doc) => tokio::task::spawn_blocking(move || hub.upsert(doc)),
                    // a moved Unit is searched for at its new instance
                    None => {
                        let key = id.to_string();
                        tokio::task::spawn_blocking(move || hub.remove(&key))
                    }
                }
                .await
                .map_err(|e| FedError::Invalid(e.to_string()))??;
                let kind = if published.is_some() {
                    "Update"
                } else {
                    "Create"
                };
                self.send_to_followers(kind, r, document).await?;
                b.set_published(id.as_str(), Some(&mark)).await?;
            }
            None => {
                let hub = self.0.hub.clone();
                let key = id.to_string();
                tokio::task::spawn_blocking(move || hub.remove(&key))
                    .await
                    .map_err(|e| FedError::Invalid(e.to_string()))??;
                if published.is_some() {
                    let tombstone = json!({"id": id, "type": "Tombstone"});
                    self.send_to_followers("Delete", r, tombstone).await?;
                    b.set_published(id.as_str(), None).await?;
                }
            }
        }
        Ok(())
    }

    /// Sends `kind` about a local object: from the instance actor to the instance's followers
    /// (the hub feed) and from the object itself to the object's own followers. Deletes come
    /// from the instance actor to both, since the object's actor is gone by then.
    pub(super) async fn send_to_followers(
        &self,
        kind: &str,
        r: LocalRef,
        object: Value,
    ) -> FedResult<()> {
        let instance = self.actor_id(LocalRef::Instance);
        let object_id = self.actor_id(r);
        let b = self.backend();
        let hub_inboxes = b.follower_inboxes(&[instance.to_string()]).await?;
        let own_inboxes: Vec<String> = b
            .follower_inboxes(&[object_id.to_string()])
            .await?
            .into_iter()
            .filter(|i| !hub_inboxes.contains(i))
            .collect();
        let senders: Vec<(&Url, Vec<String>)> = if kind == "Delete" {
            vec![(&instance, [hub_inboxes, own_inboxes].concat())]
        } else {
            vec![(&instance, hub_inboxes), (&object_id, own_inboxes)]
        };
        for (actor, inboxes) in senders {
            if inboxes.is_empty() {
                continue;
            }
            let followers = format!("{actor}/followers");
            let activity = documents::activity(
                kind,
                &self.new_activity_id(),
                actor,
                object.clone(),
                &[PUBLIC, &followers],
            );
            self.enqueue(actor, &activity, &inboxes).await?;
        }
        Ok(())
    }

    /// Tells the followers of a local Unit (and the instance's) that it moved: a `Move` from
    /// the Unit's actor with `target` its actor on the new instance.
    pub async fn announce_move(&self, unit: uuid::Uuid, target: &str) -> FedResult<()> {
        let r = LocalRef::Unit(unit);
        let id = self.actor_id(r);
        let instance = self.actor_id(LocalRef::Instance);
        let inboxes = self
            .backend()
            .follower_inboxes(&[id.to_string(), instance.to_string()])
            .await?;
        if inboxes.is_empty() {
            return Ok(());
        }
        let mut activity = documents::activity(
            "Move",
            &self.new_activity_id(),
            &id,
            json!(id),
            &[PUBLIC, &format!("{id}/followers")],
        );
        activity["target"] = json!(target);
        self.enqueue(&id, &activity, &inboxes).await
    }

    /// Puts one activity into the durable queue for each inbox (denied domains skipped).
    pub async fn enqueue(
        &self,
        actor: &Url,
        activity: &Value,
        inboxes: &[String],
    ) -> FedResult<()> {
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let body = serde_json::to_string(activity).map_err(|e| FedError::Invalid(e.to_string()))?;
        let activity_id = str_field(activity, "id").to_string();
        let mut rows = Vec::new();
        for inbox in inboxes {
            let Ok(url) = Url::parse(inbox) else { continue };
            let Some(domain) = domain_of(&url) else {
                continue;
            };
            if !self.permits(&domain) || domain == self.0.settings.domain {
                continue;
            }
            rows.push(Delivery {
                id: uuid::Uuid::now_v7().to_string(),
                activity_id: activity_id.clone(),
                actor: actor.to_string(),
                inbox: inbox.clone(),
                domain,
                body: body.clone(),
                attempts: 0,
                next_attempt_at: now.clone(),
                state: "Pending".into(),
                last_error: None,
                created_at: now.clone(),
            });
        }
        if !rows.is_empty() {
            self.0.backend.enqueue(&rows).await?;
            self.0.queue_wakeup.notify_one();
        }
        Ok(())
    }
}
