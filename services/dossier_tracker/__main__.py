from services.dossier_tracker.app import main

main()
