"""Figures and the model report.

``figures`` draws the PNGs; ``sections`` builds the report as plain data from the gold tables;
``render`` turns that data into Markdown and HTML through the Jinja2 templates in ``templates/``.
"""
