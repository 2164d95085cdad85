"""The web console's domain logic (no Flask): a case's clinical timeline, a diff between two versions,
Kaplan-Meier curves as SVG. Templates and static files live beside it; ``service.api.console`` serves
them."""
