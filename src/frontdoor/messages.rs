//! The agent messages API's domain: one conversation per agent, user and room.

use super::{key_part, AskError, FrontDoor};

impl FrontDoor {
    /// The chat of `user_id` (in `room_id`, if any) with `agent`: the same user and room
    /// continue the same conversation.
    pub async fn user_chat(
        &self,
        agent: &str,
        user_id: &str,
        room_id: Option<&str>,
    ) -> Result<String, AskError> {
        let key = format!(
            "fd:v1:{agent}:{}:{}",
            key_part(user_id),
            room_id.map(key_part).unwrap_or_default()
        );
        let title = match room_id {
            Some(r) => format!("{user_id} in {r}"),
            None => user_id.to_string(),
        };
        self.chat_for_key(&key, agent, &title).await
    }
}
