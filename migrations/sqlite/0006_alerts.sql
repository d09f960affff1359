-- Alerts and Telegram (SPEC §4, §5).
-- alert_log_level: from which level a unit's log line becomes an alert (Debug..Critical).
-- alerts_muted_until: alerts of the unit are not sent before this time (NULL: not muted).
-- telegram_language: the language the linked Telegram user reads (en, ru), for pushed alerts.
ALTER TABLE units ADD COLUMN alert_log_level TEXT NOT NULL DEFAULT 'Error';
ALTER TABLE units ADD COLUMN alerts_muted_until TEXT;
ALTER TABLE users ADD COLUMN telegram_language TEXT;
