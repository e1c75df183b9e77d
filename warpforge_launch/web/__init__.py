"""The dashboard (`warpforge-launch serve`): one page for boxes, releases, images and jobs.

Nothing here is imported by the CLI at start; Starlette and uvicorn load only in `serve`.
"""
