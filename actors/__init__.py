"""Dramatiq actors that do the hub's jobs, and the progress-reporting API.

Import `actors.worker` to declare the actors on a configured broker; this
package itself has no side effects.
"""
