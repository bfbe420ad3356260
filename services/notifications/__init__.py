"""notifications: messages to users and artisans, stored, pushed in real time and delivered."""
