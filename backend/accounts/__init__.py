"""Who may use the API and what they may see: users, their site grants, passwords and the audit log."""
