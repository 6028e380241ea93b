"""Integrations of attnpat with other libraries; each module imports its library only when used."""
