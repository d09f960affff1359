//! Follows: this instance following other instances' hub feeds and remote actors, and
//! undoing it.

use super::*;

impl Federation {
    /// Makes this instance follow another instance's hub feed: finds its instance actor
    /// (WebFinger `acct:{domain}@{domain}`), records the follow and queues a Follow.
    pub async fn follow_instance(&self, domain: &str) -> FedResult<Following> {
        if domain == self.0.settings.domain {
            return Err(FedError::Invalid("an instance cannot follow itself".into()));
        }
        let actor_url = self.resolve_instance_actor(domain).await?;
        self.follow_actor(LocalRef::Instance, &actor_url).await
    }

    /// Makes a local actor (the instance, or a user following a remote Repo) follow a remote
    /// actor: fetches it, records the follow as Pending and queues a Follow.
    pub async fn follow_actor(&self, follower: LocalRef, target: &Url) -> FedResult<Following> {
        if self.local_ref(target.as_str()).is_some() {
            return Err(FedError::Invalid("that actor is on this instance".into()));
        }
        let actor = self.fetch_actor(target).await?;
        if matches!(follower, LocalRef::User(_))
            && !matches!(actor.actor.kind.as_str(), "Repository" | "Service")
        {
            return Err(FedError::Invalid(format!(
                "{target} is a {}, not a Repo or Unit",
                actor.actor.kind
            )));
        }
        let me = self.actor_id(follower);
        let follow_id = self.new_activity_id();
        let follow = documents::activity(
            "Follow",
            &follow_id,
            &me,
            json!(actor.actor.id),
            &[&actor.actor.id],
        );
        let record = Following {
            follower: me.to_string(),
            target: actor.actor.id.clone(),
            target_domain: actor.actor.domain.clone(),
            inbox: actor.actor.inbox.clone(),
            follow_id: follow_id.to_string(),
            state: "Pending".into(),
            created_at: chrono::Utc::now().to_rfc3339(),
        };
        self.0.backend.upsert_following(&record).await?;
        self.enqueue(&me, &follow, std::slice::from_ref(&actor.actor.inbox))
            .await?;
        Ok(record)
    }

    /// Undoes a follow of `target` by a local actor; `false` when there is none.
    pub async fn unfollow_actor(&self, follower: LocalRef, target: &str) -> FedResult<bool> {
        let me = self.actor_id(follower);
        let Some(f) = self.0.backend.following(me.as_str(), target).await? else {
            return Ok(false);
        };
        if f.state == "Undone" {
            return Ok(false);
        }
        let follow = documents::activity(
            "Follow",
            &Url::parse(&f.follow_id).map_err(|e| FedError::Invalid(e.to_string()))?,
            &me,
            json!(f.target),
            &[&f.target],
        );
        let undo = documents::activity("Undo", &self.new_activity_id(), &me, follow, &[&f.target]);
        self.enqueue(&me, &undo, std::slice::from_ref(&f.inbox))
            .await?;
        self.0
            .backend
            .set_following_state(&f.follow_id, "Undone")
            .await?;
        Ok(true)
    }

    /// Stops following an instance: sends Undo(Follow) and forgets the follow and what the hub
    /// learned from it.
    pub async fn unfollow_instance(&self, domain: &str) -> FedResult<bool> {
        let me = self.actor_id(LocalRef::Instance);
        let follows = self.0.backend.following_list(me.as_str()).await?;
        let Some(f) = follows
            .into_iter()
            .find(|f| f.target_domain == domain && f.state != "Undone")
        else {
            return Ok(false);
        };
        self.unfollow_actor(LocalRef::Instance, &f.target).await?;
        self.0.backend.remove_remote_objects_on(domain).await?;
        let hub = self.0.hub.clone();
        let d = domain.to_string();
        tokio::task::spawn_blocking(move || hub.remove_instance(&d))
            .await
            .map_err(|e| FedError::Invalid(e.to_string()))??;
        Ok(true)
    }

    pub(crate) async fn resolve_instance_actor(&self, domain: &str) -> FedResult<Url> {
        let domain = crate::policy::normalize_domain(domain)
            .map_err(|e| FedError::Invalid(e.to_string()))?;
        let scheme = if self.0.settings.allow_local {
            "http"
        } else {
            "https"
        };
        let url = Url::parse(&format!(
            "{scheme}://{domain}/.well-known/webfinger?resource=acct:{domain}@{domain}"
        ))
        .map_err(|e| FedError::Invalid(e.to_string()))?;
        self.check_remote_url(&url)?;
        let res = self
            .0
            .client
            .get(url.clone())
            .header("accept", "application/jrd+json, application/json")
            .send()
            .await
            .map_err(|e| FedError::Remote(format!("{domain}: WebFinger: {}", error_chain(&e))))?;
        if !res.status().is_success() {
            return Err(FedError::Remote(format!(
                "{domain}: WebFinger answered {}",
                res.status()
            )));
        }
        let body = read_limited(res, 256 * 1024).await?;
        let jrd: Value = serde_json::from_slice(&body)
            .map_err(|e| FedError::Remote(format!("{domain}: WebFinger: {e}")))?;
        let link = jrd
            .get("links")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|l| {
                let kind = str_field(l, "type");
                str_field(l, "rel") == "self"
                    && (kind.starts_with("application/activity+json")
                        || kind.starts_with("application/ld+json"))
            })
            .map(|l| str_field(l, "href"))
            .ok_or_else(|| FedError::Remote(format!("{domain}: WebFinger has no actor link")))?;
        let actor = Url::parse(link).map_err(|e| FedError::Remote(format!("{domain}: {e}")))?;
        if domain_of(&actor).as_deref() != Some(domain.as_str()) {
            return Err(FedError::Remote(format!(
                "{domain}: actor link points to another domain"
            )));
        }
        Ok(actor)
    }
}
