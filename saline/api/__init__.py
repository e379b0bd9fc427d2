"""``saline-api``: Salt's REST API (rest_cherrypy's contract) in front of a saline master.

One module per concern: :mod:`~saline.api.options` (the ``rest_cherrypy:`` block and the eauth
options), :mod:`~saline.api.masterlink` (the master's local socket, asynchronously),
:mod:`~saline.api.eauth` (pam, file, rest), :mod:`~saline.api.perms` (Salt's permission lists),
:mod:`~saline.api.tokens` (sessions), :mod:`~saline.api.lowstate` (the clients ``local``,
``runner``, ``wheel``, ...), :mod:`~saline.api.sse` (``/events``) and :mod:`~saline.api.app`
(the routes). Clients such as Pepper, Alcali and SaltGUI talk to it unmodified.
"""
